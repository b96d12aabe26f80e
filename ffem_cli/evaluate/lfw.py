"""LFW verification (Huang et al., 2007), View 2 by default, View 1 on request.

View 2 (``pairs.txt``): 10 folds of 300 same + 300 different pairs. Reported:
accuracy mean ± std over the folds (threshold maximising accuracy on the other
9 folds), VAL@FAR=1e-3 as davidsandberg/facenet computes it (see
``metrics.facenet_val_at_far``), AUC and EER over all 6000 pairs, ROC PNG.

View 1 (``--view 1``): the threshold (and facenet's FAR=1e-3 threshold) is
chosen on ``pairsDevTrain.txt`` and applied to ``pairsDevTest.txt``; AUC and
EER are on ``pairsDevTest.txt``.

Other pair lists (``--pairs FILE``) are scored like View 2, by their own
folds: an LFW-format file, or MassFace's ``lfw_pair.txt`` (one folder of two
images per pair, for pre-aligned ``lfw-112x112``). Without ``--pairs``,
View 2 reads ``ROOT/pairs.txt``, else ``ROOT/lfw_pair.txt``. Folds are made
by ``metrics.stratified_folds`` (the official folds on ``pairs.txt``); a
one-fold file is scored with the threshold chosen on itself, and the report
says so.

``ROOT`` holds the pair files and the images either in ``ROOT/images/`` (the
layout of ``../shared/data/lfw``) or directly in ``ROOT/<Name>/`` (the LFW
tarball). Faces: with ``--detect`` MTCNN finds them; otherwise each image's
size decides. A 250x250 photo (the LFW original, funneled or not) gets the
fixed box ``LFW_FACE_BOX``, the median MTCNN box on those photos, cut out as
the run's ``crop``/``margin`` say (``align`` needs landmarks, so the box is
used). Any other size (``lfw-112x112`` and similar pre-aligned sets) is taken
as a face crop: the whole image, resized. The report counts both.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from ffem_cli.errors import FfemError
from ffem_cli.evaluate import metrics, plots
from ffem_cli.evaluate.pairfiles import (
    PairList,
    check_images_exist,
    read_lfw_pairs,
    read_lfw_people,
    read_massface_pairs,
)
from ffem_cli.evaluate.report import mean_std, write_results
from ffem_cli.evaluate.verification import (
    fold_accuracy,
    roc_points,
    score_pair_list,
    verification_summary,
)
from ffem_cli.images import ImageReadError, image_size
from ffem_cli.inference.embedding import Embedder, FaceSource

# x1, y1, x2, y2 on the 250x250 LFW images: the median of MTCNN's boxes over
# 300 images (one random image per person; interquartile range about +-5 px).
LFW_FACE_BOX = (79.0, 65.0, 170.0, 188.0)
LFW_PHOTO_SIZE = (250, 250)
FAR_TARGET = 1e-3
FIXED_BOX, WHOLE_IMAGE = "fixed box (250x250 photo)", "whole image (face crop)"


def image_dir(root: Path) -> Path:
    """``ROOT/images`` when present, else ``ROOT``."""
    return root / "images" if (root / "images").is_dir() else root


def _sources(pairs: PairList, images: Path, detect: bool) -> tuple[dict[str, FaceSource], dict[str, int]]:
    """Each pair image's ``FaceSource`` and how many images get each face preparation (module docstring)."""
    names = dict.fromkeys([*pairs.first, *pairs.second])
    sources, counts = {}, {}
    for name in names:
        path = (images / name).resolve()
        if detect:
            how, box = "detected (MTCNN)", None
        else:
            try:
                size = image_size(path)
            except ImageReadError:
                size = LFW_PHOTO_SIZE  # unreadable: embedding it reports the image by name
            how, box = (FIXED_BOX, LFW_FACE_BOX) if size == LFW_PHOTO_SIZE else (WHOLE_IMAGE, None)
        sources[name] = FaceSource(path, box=box)
        counts[how] = counts.get(how, 0) + 1
    return sources, counts


def _read_pair_file(path: Path, images: Path) -> PairList:
    """An LFW-format pair file, or MassFace's ``lfw_pair.txt`` (every line ``<folder> <0|1>``)."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        lines = [line.split() for line in handle if line.strip()]
    if len(lines) > 1 and len(lines[1]) == 2:
        return read_massface_pairs(path, images)
    return read_lfw_pairs(path)


def _view2_list(root: Path, pairs_file: Path | None) -> Path:
    if pairs_file is not None:
        if not Path(pairs_file).is_file():
            raise FfemError(f"{pairs_file}: no such pair list")
        return Path(pairs_file)
    for name in ("pairs.txt", "lfw_pair.txt"):
        if (root / name).is_file():
            return root / name
    raise FfemError(
        f"{root}: holds neither pairs.txt (LFW View 2) nor lfw_pair.txt (MassFace); name the list with --pairs"
    )


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
    embedder: Embedder,
    root: Path,
    view: int,
    output_dir: Path,
    cache_dir: Path | None,
    batch_size: int = 64,
    pairs_file: Path | None = None,
) -> dict:
    """Run the LFW protocol and write ``report.json``, ``pairs.csv``, ``folds.csv``, ``roc.png``; return the report."""
    root = Path(root)
    if not root.is_dir():
        raise FfemError(f"{root}: LFW root not found")
    images = image_dir(root)
    if view == 2:
        test = _read_pair_file(_view2_list(root, pairs_file), images)
        if test.source.name == "pairs.txt" and test.source.parent == root:
            _check_people(test, root / "people.txt")
        train = None
    elif pairs_file is not None:
        raise FfemError(
            "--pairs names a list scored by its own folds (View 2 style); View 1 uses pairsDevTrain/pairsDevTest.txt"
        )
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
    test_sources, face_counts = _sources(test, images, detect)
    scored = score_pair_list(embedder, test, test_sources, cache_dir, batch_size, "embed LFW")
    summary = verification_summary(scored)
    if train is None:
        accuracy = fold_accuracy(scored.scores, test)
        val, val_std, far = metrics.facenet_val_at_far(scored.scores, test.same, test.folds, FAR_TARGET)
        fold_table = pd.DataFrame(
            {
                "fold": range(1, len(accuracy["folds"]) + 1),
                "accuracy": accuracy["folds"],
                "threshold": accuracy["thresholds"],
            }
        )
    else:
        train_sources, train_counts = _sources(train, images, detect)
        for how, count in train_counts.items():
            face_counts[how] = face_counts.get(how, 0) + count
        scored_train = score_pair_list(embedder, train, train_sources, cache_dir, batch_size, "embed LFW train")
        threshold, train_accuracy = metrics.best_threshold(scored_train.scores, train.same)
        test_accuracy = float(((scored.scores >= threshold) == test.same).mean())
        accuracy = {
            "mean": test_accuracy, "std": 0.0, "threshold": threshold, "train_accuracy": train_accuracy,
            "fold_rule": "threshold chosen on pairsDevTrain, applied to pairsDevTest",
        }  # fmt: skip
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
        "preparation": {
            **asdict(embedder.prep),
            "face_box": None if detect or FIXED_BOX not in face_counts else list(LFW_FACE_BOX),
            "faces": face_counts,
        },
        "accuracy": accuracy,
        "val_at_far": {"far_target": FAR_TARGET, "val": val, "val_std": val_std, "far": far},
        **summary,
        "images_without_face_list": scored.images_without_face,
        "definition": (
            "accuracy: threshold maximising accuracy on the other 9 folds applied to each fold (View 2; "
            "accuracy.fold_rule says how folds were made), or chosen on pairsDevTrain and applied to "
            "pairsDevTest (View 1); std is over folds. "
            "VAL@FAR as davidsandberg/facenet: squared-L2 thresholds 0..4 step 0.001, FAR target "
            "interpolated on the training folds. A pair without a usable face is scored -1."
        ),
    }
    fpr, tpr = roc_points(scored)
    label = f"{test.source.name} (AUC {summary['auc']:.4f})"
    write_results(
        output_dir,
        report,
        tables={"pairs": scored.table(), "folds": fold_table},
        figures={
            "roc.png": lambda path: plots.roc_png(path, {label: (fpr, tpr)}, f"LFW View {view}: {embedder.description}")
        },
    )
    return report


def console_rows(report: dict) -> tuple[str, list[str], list[list]]:
    accuracy, val = report["accuracy"], report["val_at_far"]
    if report["view"] == 2 and len(accuracy["folds"]) > 1:
        accuracy_text, val_text = mean_std(accuracy["mean"], accuracy["std"]), mean_std(val["val"], val["val_std"])
    elif report["view"] == 2:
        accuracy_text, val_text = (
            f"{accuracy['mean']:.4f} (one fold: threshold chosen on the list itself)",
            f"{val['val']:.4f}",
        )
    else:  # one test split: no spread to show
        accuracy_text = f"{accuracy['mean']:.4f} (threshold {accuracy['threshold']:.4f} from pairsDevTrain)"
        val_text = f"{val['val']:.4f}"
    rows = [
        ["accuracy", accuracy_text],
        [f"VAL@FAR={val['far_target']:g}", f"{val_text} (FAR {val['far']:.5f})"],
        ["AUC", report["auc"]],
        ["EER", report["eer"]],
        ["EER (EE488B, %)", report["eer_ee488b_percent"]],
        ["faces", ", ".join(f"{how}: {count}" for how, count in report["preparation"]["faces"].items())],
        ["pairs (same / different)", f"{report['pairs']} ({report['same_pairs']} / {report['different_pairs']})"],
        ["pairs without a face", report["pairs_without_face"]],
    ]
    return f"LFW View {report['view']}", ["metric", "value"], rows
