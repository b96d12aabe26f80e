"""``ffem calibrate``: a run's decision thresholds, measured once and kept in ``runs/R/calibration.json``.

Scores come from one source:

* a pair list (``label,path1,path2`` or an LFW ``pairs.txt``) under an image root;
* an insightface ``.bin`` set (aligned 112x112 faces, read by the restricted
  unpickler of ``evaluate.binset``);
* a labelled folder or a pack: every genuine pair and a seeded sample of
  ``impostors`` impostor pairs (all of them when there are fewer).

Pairs where a side has no usable face are left out (counted in the file).
``calibration.json`` holds the model's SHA-256 and face preparation, so a
threshold is never applied to another model; ``ffem export`` copies it into
every export's metadata, and ``ffem verify`` / ``ffem search`` read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ffem_cli import __version__, atomic
from ffem_cli.errors import FfemError
from ffem_cli.inference.embedding import Embedder
from ffem_cli.inference.search import pair_scores
from ffem_cli.inference.thresholds import FAR_TARGETS, calibrate_scores

CALIBRATION_NAME = "calibration.json"
DET_NAME = "calibration_det.png"
CALIBRATION_FORMAT = 1


def scores_from_pair_list(embedder: Embedder, list_path: Path, root: Path, cache_dir, batch_size: int):
    """``(genuine, impostor, without_face, description)`` for a pair list under ``root``."""
    from ffem_cli.evaluate.verification import score_pair_file

    scored = score_pair_file(embedder, list_path, root, cache_dir, batch_size)
    pairs, root = scored.pairs, Path(root)
    ok = scored.has_face
    return (scored.scores[ok & pairs.same], scored.scores[ok & ~pairs.same], int((~ok).sum()),
            {"kind": "pairs", "list": str(Path(list_path).resolve()), "root": str(root.resolve())})  # fmt: skip


def scores_from_bin(embedder: Embedder, bin_path: Path, batch_size: int):
    """``(genuine, impostor, 0, description)`` for an insightface ``.bin`` set (``evaluate.binset``).

    Its faces are already 5-point aligned crops, embedded as they are
    (resized to the run's face size).
    """
    from ffem_cli.evaluate.binset import decode_faces, read_bin
    from ffem_cli.inference.embedding import embed_faces

    binset = read_bin(bin_path)
    faces = decode_faces(binset, embedder.prep.image_size)
    prep = embedder.prep
    vectors = np.concatenate([embed_faces(embedder.model, faces[i : i + batch_size], prep.flip, prep.flip_mode)
                              for i in range(0, len(faces), batch_size)])  # fmt: skip
    scores = pair_scores(vectors, np.arange(0, len(faces), 2), np.arange(1, len(faces), 2))
    return scores[binset.issame], scores[~binset.issame], 0, {"kind": "bin", "bin": str(Path(bin_path).resolve())}


def scores_from_labelled(labelled, impostors: int, seed: int, description: dict):
    """All genuine pairs and ``impostors`` seeded impostor pairs of a ``LabelledEmbeddings``."""
    from ffem_cli.inference.pairs import genuine_pairs, sample_impostor_pairs

    keep = np.flatnonzero(labelled.valid)
    labels, vectors = labelled.labels[keep], labelled.vectors[keep]
    g1, g2 = genuine_pairs(labels)
    if g1.size == 0:
        raise FfemError("no identity has two images with a face: no genuine pairs to calibrate on")
    i1, i2 = sample_impostor_pairs(labels, impostors, np.random.default_rng(seed))
    if i1.size == 0:
        raise FfemError("only one identity has a face: no impostor pairs to calibrate on")
    source = {**description, "images": len(labelled.keys), "images_without_face": int((~labelled.valid).sum()),
              "identities": int(np.unique(labels).size), "impostor_sample": impostors, "seed": seed}  # fmt: skip
    return pair_scores(vectors, g1, g2), pair_scores(vectors, i1, i2), 0, source


def calibrate(embedder: Embedder, genuine, impostor, without_face: int, source: dict, run_dir: Path) -> dict:
    """Compute the thresholds, write ``calibration.json`` and the DET curve into ``run_dir``; return the record."""
    from ffem_cli.evaluate.metrics import roc_curve
    from ffem_cli.evaluate.plots import det_png

    try:
        found = calibrate_scores(genuine, impostor, FAR_TARGETS)
    except ValueError as exc:
        raise FfemError(f"cannot calibrate: {exc}") from None
    record = {
        "format": CALIBRATION_FORMAT,
        "model": embedder.description,
        "model_sha256": embedder.model_sha256,
        "preparation": asdict(embedder.prep),
        "source": {**source, "pairs_without_face": without_face},
        **found,
        "decision": "same person when cosine similarity >= threshold",
        "ffem_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    run_dir = Path(run_dir)
    scores = np.r_[genuine, impostor]
    labels = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    fpr, tpr, _ = roc_curve(scores, labels)
    points = {f"FAR {t['far']:g}": (t["observed_far"], 1 - t["tar"]) for t in found["thresholds"]}
    points["EER"] = (found["eer"]["rate"], found["eer"]["rate"])
    with atomic.atomic_open(run_dir / DET_NAME, "wb") as handle:
        det_png(handle, {Path(embedder.description).parent.name: (fpr, 1 - tpr)}, points,
                f"DET: {found['genuine_pairs']:,} genuine / {found['impostor_pairs']:,} impostor pairs")  # fmt: skip
    record["det_png"] = DET_NAME
    atomic.write_json(run_dir / CALIBRATION_NAME, record)
    return record


def read_calibration(path: Path) -> dict:
    """A ``calibration.json``; ``FfemError`` when malformed."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FfemError(f"{path}: unreadable calibration ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("thresholds"), list) or "eer" not in record:
        raise FfemError(f"{path}: not an ffem calibration file")
    return record


def calibration_beside(model_file: Path, model_sha256: str) -> dict | None:
    """The ``calibration.json`` in ``model_file``'s folder (a run) when it was made for this model, else ``None``."""
    path = Path(model_file).parent / CALIBRATION_NAME
    if not path.is_file():
        return None
    record = read_calibration(path)
    return record if record.get("model_sha256") == model_sha256 else None


def pick_threshold(
    calibration: dict | None, far: float | None, threshold: float | None, where: str
) -> tuple[float, str]:
    """``(threshold, how it was chosen)`` from ``--threshold``, ``--far`` (looked up) or the EER threshold."""
    if threshold is not None:
        if far is not None:
            raise FfemError("give --far or --threshold, not both")
        return float(threshold), "given with --threshold"
    if calibration is None:
        raise FfemError(f"no calibration for {where}: run ffem calibrate --run RUN first, or give --threshold T")
    if far is None:
        eer = calibration["eer"]
        return float(eer["threshold"]), f"EER threshold (FAR = FRR = {eer['rate']:.4g} on calibration)"
    for entry in calibration["thresholds"]:
        if np.isclose(entry["far"], far, rtol=1e-6, atol=0.0):
            return float(
                entry["threshold"]
            ), f"FAR {far:g} (calibrated, 95% interval {entry['interval_95'][0]:.4f}..{entry['interval_95'][1]:.4f})"
    available = ", ".join(f"{e['far']:g}" for e in calibration["thresholds"]) or "none"
    reason = calibration.get("omitted", {}).get(f"{far:g}")
    raise FfemError(
        f"no calibrated threshold at FAR {far:g} (available: {available})" + (f"; {reason}" if reason else "")
    )
