"""Per-epoch verification accuracy on a pair list whose images are in a pack.

Pair lists are read by ``evaluate.pairfiles``: EE488B ``1,a.jpg,b.jpg``
lines, or LFW ``pairs.txt`` / ``pairsDev*.txt`` (image ``n`` of ``name`` is
``name/name_<nnnn>.jpg``).

Paths are image-list keys, i.e. the ``image/path`` of the pack's examples.
Accuracy is 10-fold: the threshold is chosen on nine folds and applied to
the tenth (``evaluate.metrics.kfold_accuracy``) over the stratified folds
of ``evaluate.pairfiles`` (a one-fold View 1 file gets 10 such folds too).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ffem_cli.errors import FfemError
from ffem_cli.evaluate.metrics import kfold_accuracy, stratified_folds
from ffem_cli.evaluate.pairfiles import PairList, read_label_pairs, read_lfw_pairs

FOLDS = 10


def read_pairs(path: str | Path) -> PairList:
    """An EE488B or LFW pair list (``evaluate.pairfiles``), with 10 folds when the file has one."""
    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such pair list")
    with open(path, encoding="utf-8-sig") as handle:
        first_line = next((line for line in handle if line.strip()), "")
    pairs = read_label_pairs(path) if "," in first_line else read_lfw_pairs(path)
    if pairs.same.all() or not pairs.same.any():
        raise FfemError(f"{path}: needs both same-person and different-person pairs")
    if np.unique(pairs.folds).size < 2:
        try:
            pairs = dataclasses.replace(pairs, folds=stratified_folds(pairs.same, FOLDS))
        except ValueError as exc:
            raise FfemError(f"{path}: {exc}") from None
    return pairs


def embed_pack(embedder, pack_dir: str | Path, batch_size: int = 128) -> dict[str, np.ndarray]:
    """``{image key: embedding (D,)}`` for every example of a pack (eval pipeline, no augmentation)."""
    from ffem_cli.data.pipeline import eval_dataset

    found = {}
    for images, _, paths in eval_dataset(pack_dir, batch_size):
        vectors = np.asarray(embedder(images, training=False), dtype=np.float32)
        for key, vector in zip(paths.numpy(), vectors, strict=True):
            found[key.decode("utf-8")] = vector
    return found


def verification_accuracy(embeddings: dict[str, np.ndarray], pairs: PairList, source: str) -> tuple[float, float]:
    """(mean, std) 10-fold accuracy of cosine scores; ``FfemError`` when a pair image is not in the pack."""
    missing = [k for k in pairs.first + pairs.second if k not in embeddings]
    if missing:
        raise FfemError(f"{source}: {len(set(missing))} pair image(s) are not in the validation pack, e.g. {missing[0]!r}")
    a = np.stack([embeddings[k] for k in pairs.first])
    b = np.stack([embeddings[k] for k in pairs.second])
    scores = np.sum(a * b, axis=1)
    result = kfold_accuracy(scores, pairs.same, pairs.folds)
    return result.mean, result.std
