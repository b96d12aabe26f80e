"""LFW verification (Huang et al., 2007), View 2 by default, View 1 on request.

View 2 (``pairs.txt``): 10 folds of 300 same + 300 different pairs. Reported:
accuracy mean ± std over the folds (threshold maximising accuracy on the other
9 folds), VAL@FAR=1e-3 as davidsandberg/facenet computes it (see
``metrics.facenet_val_at_far``), AUC and EER over all 6000 pairs, ROC PNG.

View 1 (``--view 1``): the threshold (and facenet's FAR=1e-3 threshold) is
chosen on ``pairsDevTrain.txt`` and applied to ``pairsDevTest.txt``; AUC and
EER are on ``pairsDevTest.txt``.

``ROOT`` holds the pair files and the images either in ``ROOT/images/`` (the
layout of ``../shared/data/lfw``) or directly in ``ROOT/<Name>/`` (the LFW
tarball). Faces: with ``--detect`` MTCNN finds them; otherwise the fixed box
``LFW_FACE_BOX`` is used, the median MTCNN box on the 250x250 (deep-)funneled
images, then cut out as the run's ``crop``/``margin`` say (``align`` needs
landmarks, so without ``--detect`` the box is used).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from ffem_cli.errors import FfemError
from ffem_cli.evaluate import metrics, plots
from ffem_cli.evaluate.embedding import Embedder, FaceSource
from ffem_cli.evaluate.pairfiles import (
    PairList,
    check_images_exist,
    read_lfw_pairs,
    read_lfw_people,
)
from ffem_cli.evaluate.report import mean_std, write_results
from ffem_cli.evaluate.verification import roc_points, score_pair_list, verification_summary

# x1, y1, x2, y2 on the 250x250 LFW images: the median of MTCNN's boxes over
# 300 images (one random image per person; interquartile range about +-5 px).
LFW_FACE_BOX = (79.0, 65.0, 170.0, 188.0)
FAR_TARGET = 1e-3


def image_dir(root: Path) -> Path:
    """``ROOT/images`` when present, else ``ROOT``."""
    return root / "images" if (root / "images").is_dir() else root


def _sources(pairs: PairList, images: Path, detect: bool) -> dict[str, FaceSource]:
    box = None if detect else LFW_FACE_BOX
    names = dict.fromkeys([*pairs.first, *pairs.second])
    return {name: FaceSource((images / name).resolve(), box=box) for name in names}


def _check_people(pairs: PairList, people_file: Path) -> None:
    """Every pair of fold k names people of fold k of the people file (when the file is there)."""
    if not people_file.is_file():
        return
    folds = read_lfw_people(people_file)
    if len(folds) != int(pairs.folds.max()) + 1:
        raise FfemError(f"{people_file}: {len(folds)} folds, but {pairs.source} has {int(pairs.folds.max()) + 1}")
    for first, second, fold, line in zip(pairs.first, pairs.second, pairs.folds, pairs.lines, strict=True):
        for name in (first.split("/")[0], second.split("/")[0]):
            if name not in folds[fold]:
                raise FfemError(f"{pairs.source} line {line}: {name} is not in fold {fold + 1} of {people_file}")


def evaluate_lfw(
    embedder: Embedder, root: Path, view: int, output_dir: Path, cache_dir: Path | None, batch_size: int = 64
) -> dict:
    """Run the LFW protocol and write ``report.json``, ``pairs.csv``, ``folds.csv``, ``roc.png``; return the report."""
    root = Path(root)
    if not root.is_dir():
        raise FfemError(f"{root}: LFW root not found")
    images = image_dir(root)
    if view == 2:
        test = read_lfw_pairs(root / "pairs.txt")
        _check_people(test, root / "people.txt")
        train = None
    elif view == 1:
        train = read_lfw_pairs(root / "pairsDevTrain.txt")
        test = read_lfw_pairs(root / "pairsDevTest.txt")
        _check_people(train, root / "peopleDevTrain.txt")
        _check_people(test, root / "peopleDevTest.txt")
    else:
        raise FfemError(f"--view must be 1 or 2, got {view}")
    for pair_list in filter(None, (train, test)):
        check_images_exist(pair_list, images)
    detect = embedder.prep.detect
    scored = score_pair_list(embedder, test, _sources(test, images, detect), cache_dir, batch_size, "embed LFW")
    summary = verification_summary(scored)
    if train is None:
        folds = metrics.kfold_accuracy(scored.scores, test.same, test.folds)
        accuracy = {"mean": folds.mean, "std": folds.std, "folds": folds.accuracies.tolist(), "thresholds": folds.thresholds.tolist()}
        val, val_std, far = metrics.facenet_val_at_far(scored.scores, test.same, test.folds, FAR_TARGET)
        fold_table = pd.DataFrame({"fold": range(1, len(folds.accuracies) + 1), "accuracy": folds.accuracies, "threshold": folds.thresholds})
    else:
        scored_train = score_pair_list(embedder, train, _sources(train, images, detect), cache_dir, batch_size, "embed LFW train")
        threshold, train_accuracy = metrics.best_threshold(scored_train.scores, train.same)
        test_accuracy = float(((scored.scores >= threshold) == test.same).mean())
        accuracy = {"mean": test_accuracy, "std": 0.0, "threshold": threshold, "train_accuracy": train_accuracy}
        val, far = metrics.facenet_val_split(scored_train.scores, train.same, scored.scores, test.same, FAR_TARGET)
        val_std = 0.0
        fold_table = pd.DataFrame({"fold": ["DevTest"], "accuracy": [test_accuracy], "threshold": [threshold]})
    report = {
        "protocol": "lfw",
        "view": view,
        "pairs_file": str(test.source),
        "image_root": str(images),
        "model": embedder.description,
        "model_sha256": embedder.model_sha256,
        "preparation": {**asdict(embedder.prep), "face_box": None if detect else list(LFW_FACE_BOX)},
        "accuracy": accuracy,
        "val_at_far": {"far_target": FAR_TARGET, "val": val, "val_std": val_std, "far": far},
        **summary,
        "images_without_face_list": scored.images_without_face,
        "definition": (
            "accuracy: threshold maximising accuracy on the other 9 folds applied to each fold (View 2), "
            "or chosen on pairsDevTrain and applied to pairsDevTest (View 1); std is over folds. "
            "VAL@FAR as davidsandberg/facenet: squared-L2 thresholds 0..4 step 0.001, FAR target "
            "interpolated on the training folds. A pair without a usable face is scored -1."
        ),
    }
    fpr, tpr = roc_points(scored)
    label = f"LFW View {view} (AUC {summary['auc']:.4f})"
    write_results(
        output_dir,
        report,
        tables={"pairs": scored.table(), "folds": fold_table},
        figures={"roc.png": lambda path: plots.roc_png(path, {label: (fpr, tpr)}, f"LFW View {view}: {embedder.description}")},
    )
    return report


def console_rows(report: dict) -> tuple[str, list[str], list[list]]:
    accuracy, val = report["accuracy"], report["val_at_far"]
    if report["view"] == 2:
        accuracy_text, val_text = mean_std(accuracy["mean"], accuracy["std"]), mean_std(val["val"], val["val_std"])
    else:  # one test split: no spread to show
        accuracy_text = f"{accuracy['mean']:.4f} (threshold {accuracy['threshold']:.4f} from pairsDevTrain)"
        val_text = f"{val['val']:.4f}"
    rows = [
        ["accuracy", accuracy_text],
        [f"VAL@FAR={val['far_target']:g}", f"{val_text} (FAR {val['far']:.5f})"],
        ["AUC", report["auc"]],
        ["EER", report["eer"]],
        ["pairs (same / different)", f"{report['pairs']} ({report['same_pairs']} / {report['different_pairs']})"],
        ["pairs without a face", report["pairs_without_face"]],
    ]
    return f"LFW View {report['view']}", ["metric", "value"], rows
