"""RFW, Racial Faces in-the-Wild (Wang et al., ICCV 2019): per-race Recall@1 and verification.

Layout (the official test set): ``ROOT/images/test/data/<Race>/<id>/<id>_NNNN.jpg``
and ``ROOT/images/test/txts/<Race>/<Race>_pairs.txt`` (+ ``<Race>_people.txt``
and ``<Race>_lmk.txt`` where present); ``ROOT`` may also be the ``test``
folder itself (holding ``data/`` and ``txts/``). Races: African, Asian,
Caucasian, Indian.

Per race:

- **Recall@1**: every image of the race whose identity has another image is
  a query against all other images of that race (itself excluded); a hit when
  its nearest neighbour by cosine similarity is the same identity.
  Identities with a single image are gallery-only distractors.
- **Recall@1 (seed)**: the seed FFEM project's definition, for comparison
  with its results table: every image is a query, so single-image identities
  count as misses (``retrieval.seed_recall_at_1``). It is never above
  Recall@1. Its face crop is ``--crop seed`` (the landmark-extent box,
  stretched, no margin); the seed's last-batch self-match is not reproduced.
- **Verification accuracy** on ``<Race>_pairs.txt``: 10 stratified folds
  (fold i = the i-th tenth of the same-person pairs plus the i-th tenth of the
  different-person pairs, in file order); the accuracy-maximising threshold of
  9 folds is applied to the 10th; mean ± std over folds. AUC and EER over all
  pairs are reported too.

Identities listed under more than one race (RFW has a few) are reported in
``report.json`` and on the console.

Fairness summary, for each metric: mean over races, standard deviation
across races (population std of the 4 values) and the gap best - worst.

Faces: with ``--detect`` MTCNN finds them. Otherwise, when ``<Race>_lmk.txt``
lists the image, its five landmarks are used (5-point alignment for runs
trained with ``crop = "align"``; for ``"margin"`` an MTCNN-like box derived
from the landmarks, see ``embedding.box_from_landmarks``); images without
landmarks are taken as face crops.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ffem_cli.errors import FfemError
from ffem_cli.evaluate import metrics, plots
from ffem_cli.evaluate.pairfiles import (
    check_images_exist,
    read_rfw_landmarks,
    read_rfw_pairs,
    read_rfw_people,
)
from ffem_cli.evaluate.report import mean_std, write_results
from ffem_cli.evaluate.retrieval import evaluate_retrieval, seed_recall_at_1
from ffem_cli.evaluate.verification import NO_FACE_SCORE, fold_accuracy
from ffem_cli.images import scan_identity_folder
from ffem_cli.inference.embedding import Embedder, FaceSource, compute_embeddings
from ffem_cli.inference.search import pair_scores

RACES = ("African", "Asian", "Caucasian", "Indian")


def find_test_dir(root: Path) -> Path:
    """The folder holding ``data/`` and ``txts/``: ``ROOT/images/test``, ``ROOT/test`` or ``ROOT``."""
    root = Path(root)
    if not root.is_dir():
        raise FfemError(f"{root}: RFW root not found")
    for candidate in (root / "images" / "test", root / "test", root):
        if (candidate / "data").is_dir() and (candidate / "txts").is_dir():
            return candidate
    raise FfemError(f"{root}: not an RFW root (expected images/test/data/<Race>/ and images/test/txts/<Race>/)")


def _race_inputs(test_dir: Path, race: str, detect: bool):
    data_dir = test_dir / "data" / race
    txt_dir = test_dir / "txts" / race
    if not data_dir.is_dir():
        raise FfemError(f"{data_dir}: missing race folder (RFW races: {', '.join(RACES)})")
    pairs = read_rfw_pairs(txt_dir / f"{race}_pairs.txt")
    check_images_exist(pairs, data_dir)
    folder = scan_identity_folder(data_dir)
    people_file = txt_dir / f"{race}_people.txt"
    if people_file.is_file():
        missing = [p for p in read_rfw_people(people_file) if p not in folder.label_map]
        if missing:
            raise FfemError(
                f"{people_file}: {len(missing)} listed identities have no images in {data_dir} (first: {missing[0]})"
            )
    lmk_file = txt_dir / f"{race}_lmk.txt"
    landmarks = read_rfw_landmarks(lmk_file) if lmk_file.is_file() and not detect else {}
    sources = {
        rel: FaceSource((data_dir / rel).resolve(), landmarks=landmarks.get(rel.rsplit("/", 1)[-1]))
        for rel in dict.fromkeys([*folder.paths, *pairs.first, *pairs.second])
    }
    return folder, pairs, sources, lmk_file.is_file()


def evaluate_race(embedder: Embedder, test_dir: Path, race: str, cache_dir: Path | None, batch_size: int) -> dict:
    """Recall@1 and 10-fold verification of one race; ``_pairs``/``_roc`` keys hold tables for the files."""
    folder, pairs, sources, has_landmarks = _race_inputs(test_dir, race, embedder.prep.detect)
    names = list(sources)
    embedded = compute_embeddings(embedder, list(sources.values()), cache_dir, batch_size, description=f"embed {race}")
    position = {name: i for i, name in enumerate(names)}
    folder_index = np.array([position[p] for p in folder.paths])
    retrieval = evaluate_retrieval(embedded.vectors[folder_index], folder.labels, embedded.valid[folder_index], ks=(1,))
    seed_recall = seed_recall_at_1(embedded.vectors[folder_index], folder.labels, embedded.valid[folder_index])
    first = np.array([position[n] for n in pairs.first])
    second = np.array([position[n] for n in pairs.second])
    scores = pair_scores(embedded.vectors, first, second)
    has_face = embedded.valid[first] & embedded.valid[second]
    scores[~has_face] = NO_FACE_SCORE
    folds = fold_accuracy(scores, pairs)
    fpr, tpr, _ = metrics.roc_curve(scores, pairs.same)
    eer, _ = metrics.equal_error_rate(scores, pairs.same)
    pair_table = pd.DataFrame(
        {"line": pairs.lines, "fold": pairs.folds + 1, "same": pairs.same.astype(int), "first": pairs.first,
         "second": pairs.second, "score": scores, "face_found": has_face.astype(int)}
    )  # fmt: skip
    return {
        "race": race,
        "recall@1": retrieval.metrics["recall@1"],
        "recall@1 (seed)": seed_recall,
        "accuracy_mean": folds["mean"],
        "accuracy_std": folds["std"],
        "fold_accuracies": folds["folds"],
        "auc": metrics.auc(fpr, tpr),
        "eer": eer,
        "images": len(folder.paths),
        "identities": len(folder.label_map),
        "queries": retrieval.num_queries,
        "distractors": retrieval.num_distractors,
        "pairs": len(pairs),
        "images_without_face": embedded.num_invalid,
        "queries_without_face": retrieval.num_invalid_queries,
        "pairs_without_face": int((~has_face).sum()),
        "landmarks_used": has_landmarks and not embedder.prep.detect,
        "_pairs": pair_table,
        "_roc": (fpr, tpr),
    }


def identities_in_several_races(test_dir: Path) -> dict[str, list[str]]:
    """``{identity: [races]}`` for every identity folder found under more than one race of ``test_dir/data``."""
    races_of: dict[str, list[str]] = {}
    for race in RACES:
        data_dir = test_dir / "data" / race
        if data_dir.is_dir():
            for child in sorted(data_dir.iterdir()):
                if child.is_dir():
                    races_of.setdefault(child.name, []).append(race)
    return {identity: races for identity, races in sorted(races_of.items()) if len(races) > 1}


def fairness(values: list[float]) -> dict:
    """Mean, population standard deviation across groups, and best - worst gap."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "gap": float(array.max() - array.min())}


def evaluate_rfw(
    embedder: Embedder,
    root: Path,
    output_dir: Path,
    cache_dir: Path | None,
    races: tuple[str, ...] = RACES,
    batch_size: int = 64,
) -> dict:
    """Run RFW for ``races``; write ``report.json``, ``races.csv``, ``pairs_<Race>.csv``, ``races.png``, ``roc.png``."""
    unknown = [r for r in races if r not in RACES]
    if unknown:
        raise FfemError(f"unknown RFW race {unknown[0]!r} (races: {', '.join(RACES)})")
    test_dir = find_test_dir(root)
    for race in races:  # fail on a missing folder before any embedding work
        if not (test_dir / "data" / race).is_dir():
            raise FfemError(f"{test_dir / 'data' / race}: missing race folder (RFW races: {', '.join(RACES)})")
    results = [evaluate_race(embedder, test_dir, race, cache_dir, batch_size) for race in races]
    shared = identities_in_several_races(test_dir)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    report = {
        "protocol": "rfw",
        "root": str(test_dir),
        "model": embedder.description,
        "model_sha256": embedder.model_sha256,
        "preparation": asdict(embedder.prep),
        "races": public,
        "fairness": {
            "recall@1": fairness([r["recall@1"] for r in results]),
            "recall@1 (seed)": fairness([r["recall@1 (seed)"] for r in results]),
            "accuracy": fairness([r["accuracy_mean"] for r in results]),
        },
        "identities_in_several_races": shared,
        "fold_rule": metrics.FOLD_RULE,
        "definition": (
            "Recall@1: each image whose identity has another image queries all other images of its race "
            "(itself excluded); hit when the nearest neighbour by cosine similarity is the same identity; "
            "single-image identities are gallery-only distractors; an image without a usable face is a "
            "miss as a query and never retrieved. Recall@1 (seed): the seed FFEM project's definition, "
            "every image is a query and the denominator counts all images, so single-image identities are "
            "misses; comparable with the seed's table only with its face crop (--crop seed); the seed's "
            "last-batch self-match (a wrong diagonal offset) is not reproduced. Accuracy: 10 stratified "
            "folds (see fold_rule), threshold maximising accuracy on 9 folds applied to the 10th, mean +- "
            "std over folds; a pair without a usable face is scored -1. Fairness: mean, population std "
            "across races, best - worst gap."
        ),
    }
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "fold_accuracies"} for r in public])
    tables = {"races": table, **{f"pairs_{r['race']}": r["_pairs"] for r in results}}
    names = [r["race"] for r in results]

    def bars(path: Path) -> None:
        plots.group_bars_png(
            path,
            names,
            {
                "Recall@1": ([r["recall@1"] for r in results], None),
                "verification accuracy": ([r["accuracy_mean"] for r in results], [r["accuracy_std"] for r in results]),
            },
            f"RFW per race: {embedder.description}",
        )

    curves = {f"{r['race']} (AUC {r['auc']:.3f})": r["_roc"] for r in results}
    figures = {"races.png": bars, "roc.png": lambda path: plots.roc_png(path, curves, f"RFW: {embedder.description}")}
    write_results(output_dir, report, tables=tables, figures=figures)
    return report


def console_rows(report: dict) -> tuple[str, list[str], list[list]]:
    rows = [
        [r["race"], r["recall@1"], r["recall@1 (seed)"], mean_std(r["accuracy_mean"], r["accuracy_std"]), r["auc"]]
        for r in report["races"]
    ]
    fair = report["fairness"]
    recall, seed, accuracy = fair["recall@1"], fair["recall@1 (seed)"], fair["accuracy"]
    for name, key in (("mean", "mean"), ("std", "std"), ("best - worst", "gap")):
        rows.append([name, recall[key], seed[key], f"{accuracy[key]:.4f}", ""])
    columns = ["race", "recall@1", "recall@1 (seed)", "accuracy", "AUC"]
    return "RFW", columns, rows
