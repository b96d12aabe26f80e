"""Open-set identification: is the probe someone enrolled, and who? (``ffem eval folder --open-set``).

Split: the identities of a labelled folder are shuffled with a seed; a
fraction ``unknown_fraction`` of them is *unknown* (never enrolled), the
rest *enrolled*. Each enrolled identity enrols one image (a seeded choice
among its images with a face) into the gallery; its other images are *mated*
probes. Every image of an unknown identity is a *non-mated* probe.

Metrics (Grother et al., NIST FRVT Part 2: Identification): each probe's
best gallery score ``s`` and identity.

* FPIR(T): fraction of non-mated probes with ``s >= T`` (a stranger taken
  for someone).
* DIR(T) (also TPIR at rank 1): fraction of mated probes whose best match is
  their own identity with ``s >= T``.
* DIR@FPIR f: DIR at ``T = thresholds.threshold_at_far(non-mated scores, f)``,
  reported when the non-mated count supports ``f`` (``thresholds.supported``).
* rank-1 identification rate: DIR with no threshold (closed set).

A probe without a face has no score: a mated one is a miss, a non-mated one
is correctly rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ffem_cli.errors import FfemError
from ffem_cli.inference.search import topk_search
from ffem_cli.inference.thresholds import needed_impostors, supported, threshold_at_far

FPIR_TARGETS = (1e-1, 1e-2, 1e-3)


@dataclass(frozen=True)
class OpenSetSplit:
    """Indices into the evaluated images: ``gallery`` (one per enrolled identity), ``mated`` and ``nonmated`` probes."""

    gallery: np.ndarray
    mated: np.ndarray
    nonmated: np.ndarray
    unknown_identities: np.ndarray


def split_open_set(labels, valid, unknown_fraction: float, seed: int) -> OpenSetSplit:
    """The seeded enrolled / unknown split of the module docstring."""
    labels, valid = np.asarray(labels), np.asarray(valid, bool)
    if not 0.0 < unknown_fraction < 1.0:
        raise FfemError(f"--unknown-fraction must lie strictly between 0 and 1, got {unknown_fraction}")
    identities = np.unique(labels)
    if identities.size < 2:
        raise FfemError("open-set evaluation needs at least two identities (enrolled and unknown)")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(identities)
    unknown_count = int(np.clip(round(unknown_fraction * identities.size), 1, identities.size - 1))
    unknown = np.sort(shuffled[:unknown_count])
    gallery, mated = [], []
    for identity in np.sort(shuffled[unknown_count:]):
        members = np.flatnonzero(labels == identity)
        with_face = members[valid[members]]
        enrolled = rng.choice(with_face if with_face.size else members)
        gallery.append(enrolled)
        mated.extend(members[members != enrolled].tolist())
    nonmated = np.flatnonzero(np.isin(labels, unknown))
    return OpenSetSplit(np.array(gallery, np.int64), np.array(mated, np.int64), nonmated, unknown)


@dataclass(frozen=True)
class OpenSetResult:
    """Per-probe best ``score`` (-inf without a face) and ``correct`` identity (mated only), and the metrics."""

    mated_scores: np.ndarray
    mated_correct: np.ndarray
    nonmated_scores: np.ndarray
    metrics: dict


def open_set_metrics(vectors, labels, valid, split: OpenSetSplit, fpir_targets=FPIR_TARGETS) -> OpenSetResult:
    """DIR@FPIR for ``fpir_targets``, rank-1 identification rate and counts (see the module docstring)."""
    vectors, labels, valid = np.asarray(vectors, np.float32), np.asarray(labels), np.asarray(valid, bool)
    enrolled = split.gallery[valid[split.gallery]]
    if enrolled.size == 0:
        raise FfemError("no enrolled image has a face: nothing to search")
    if split.mated.size == 0:
        raise FfemError("no enrolled identity has a second image: no mated probes (needs identities with >= 2 images)")

    def best(probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full(probes.size, -np.inf)
        found = np.full(probes.size, -1, np.int64)
        live = valid[probes]
        if live.any():
            s, i = topk_search(vectors[probes[live]], vectors[enrolled], 1)
            scores[live], found[live] = s[:, 0], labels[enrolled[i[:, 0]]]
        return scores, found

    mated_scores, mated_found = best(split.mated)
    nonmated_scores, _ = best(split.nonmated)
    correct = mated_found == labels[split.mated]
    metrics = {"rank1_identification_rate": float(correct.mean()), "dir_at_fpir": {}, "dir_at_fpir_omitted": {}}
    for fpir in fpir_targets:
        key = f"{fpir:g}"
        if not supported(nonmated_scores.size, fpir):
            metrics["dir_at_fpir_omitted"][key] = (
                f"needs >= {needed_impostors(fpir):,} non-mated probes for a bounded 95% interval, have {nonmated_scores.size:,}"
            )
            continue
        threshold = threshold_at_far(nonmated_scores, fpir)
        metrics["dir_at_fpir"][key] = {
            "dir": float((correct & (mated_scores >= threshold)).mean()),
            "threshold": threshold,
            "observed_fpir": float((nonmated_scores >= threshold).mean()),
        }
    return OpenSetResult(mated_scores, correct, nonmated_scores, metrics)


def dir_fpir_curve(result: OpenSetResult) -> tuple[np.ndarray, np.ndarray]:
    """``(fpir, dir)`` at every threshold just above a non-mated score, plus the no-threshold end point
    (every probe with a face accepted)."""
    candidates = np.unique(result.nonmated_scores[np.isfinite(result.nonmated_scores)])
    thresholds = np.r_[np.nextafter(candidates, np.inf)[::-1], -np.finfo(np.float64).max]
    nonmated = np.sort(result.nonmated_scores)
    fpir = 1.0 - np.searchsorted(nonmated, thresholds, side="left") / max(nonmated.size, 1)
    hits = np.sort(result.mated_scores[result.mated_correct])
    dir_ = (hits.size - np.searchsorted(hits, thresholds, side="left")) / max(result.mated_scores.size, 1)
    return fpir, dir_


def evaluate_open_set(
    embedder, root, output_dir, cache_dir, batch_size: int, faces, unknown_fraction: float, seed: int
) -> dict:
    """Open-set identification on a labelled folder; writes ``report.json``, ``probes.csv``, ``dir_fpir.png``."""
    from dataclasses import asdict
    from pathlib import Path

    import pandas as pd

    from ffem_cli.evaluate.plots import dir_fpir_png
    from ffem_cli.evaluate.report import write_results
    from ffem_cli.inference.labelled import folder_embeddings

    faces_of = folder_embeddings(embedder, root, faces, cache_dir, batch_size)
    split = split_open_set(faces_of.labels, faces_of.valid, unknown_fraction, seed)
    result = open_set_metrics(faces_of.vectors, faces_of.labels, faces_of.valid, split)
    report = {
        "protocol": "folder-open-set",
        "root": str(root),
        "model": embedder.description,
        "model_sha256": embedder.model_sha256,
        "preparation": asdict(embedder.prep),
        **result.metrics,
        "seed": seed,
        "unknown_fraction": unknown_fraction,
        "identities": len(faces_of.identities),
        "enrolled_identities": int(split.gallery.size),
        "unknown_identities": int(split.unknown_identities.size),
        "mated_probes": int(split.mated.size),
        "nonmated_probes": int(split.nonmated.size),
        "images_without_face": int((~faces_of.valid).sum()),
        "definition": (
            "identities split with the seed into enrolled (one image each in the gallery, the others mated probes) "
            "and unknown (all images non-mated probes); FPIR(T): non-mated probes whose best score >= T; DIR(T): "
            "mated probes whose best match is their identity with score >= T; T for FPIR f from the non-mated scores; "
            "rank-1 identification rate: DIR without a threshold."
        ),
    }
    probes = pd.DataFrame({
        "path": [faces_of.keys[i] for i in np.r_[split.mated, split.nonmated]],
        "kind": ["mated"] * split.mated.size + ["non-mated"] * split.nonmated.size,
        "best_score": np.r_[result.mated_scores, result.nonmated_scores],
        "best_is_own_identity": np.r_[result.mated_correct.astype(int), np.zeros(split.nonmated.size, int)],
    })  # fmt: skip
    fpir, dir_ = dir_fpir_curve(result)
    title = f"Open set on {Path(root).name}: {split.gallery.size} enrolled, {split.unknown_identities.size} unknown"
    figures = {
        "dir_fpir.png": lambda path: dir_fpir_png(path, {Path(embedder.description).parent.name: (fpir, dir_)}, title)
    }
    write_results(output_dir, report, tables={"probes": probes}, figures=figures)
    return report


def console_rows(report: dict) -> tuple[str, list[str], list[list]]:
    rows = [["rank-1 identification rate", report["rank1_identification_rate"]]]
    rows += [[f"DIR@FPIR={fpir}", value["dir"]] for fpir, value in report["dir_at_fpir"].items()]
    rows += [[f"DIR@FPIR={fpir}", f"omitted: {reason}"] for fpir, reason in report["dir_at_fpir_omitted"].items()]
    rows += [
        ["enrolled / unknown identities", f"{report['enrolled_identities']} / {report['unknown_identities']}"],
        ["mated / non-mated probes", f"{report['mated_probes']} / {report['nonmated_probes']}"],
        ["images without a face", report["images_without_face"]],
    ]
    return f"Open-set identification on {report['root']}", ["metric", "value"], rows
