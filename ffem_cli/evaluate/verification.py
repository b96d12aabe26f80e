"""Scoring a pair list with an embedder, shared by the LFW, RFW and pair-list protocols.

A pair whose face could not be prepared on either side (no face found with
``--detect``) is scored -1, the lowest cosine similarity: it is rejected at
every threshold a protocol can pick (a miss for a same-person pair, a correct
rejection for a different-person pair), stays in every denominator, and is
counted in the report as ``pairs_without_face``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ffem_cli.errors import FfemError
from ffem_cli.evaluate import metrics
from ffem_cli.evaluate.pairfiles import PairList
from ffem_cli.inference.embedding import Embedder, FaceSource, compute_embeddings
from ffem_cli.inference.search import pair_scores

NO_FACE_SCORE = -1.0


@dataclass(frozen=True)
class ScoredPairs:
    """Cosine scores of a pair list; ``has_face[i]`` False when a side had no usable face."""

    pairs: PairList
    scores: np.ndarray
    has_face: np.ndarray
    images_without_face: list[str]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "line": self.pairs.lines,
                "fold": self.pairs.folds,
                "same": self.pairs.same.astype(int),
                "first": self.pairs.first,
                "second": self.pairs.second,
                "score": self.scores,
                "face_found": self.has_face.astype(int),
            }
        )


def score_pair_list(
    embedder: Embedder,
    pairs: PairList,
    sources: dict[str, FaceSource],
    cache_dir: Path | None,
    batch_size: int,
    description: str,
) -> ScoredPairs:
    """Embed every image of ``pairs`` once (``sources`` maps a pair's image name to its source) and score the pairs."""
    names = list(dict.fromkeys([*pairs.first, *pairs.second]))
    position = {name: i for i, name in enumerate(names)}
    embedded = compute_embeddings(embedder, [sources[n] for n in names], cache_dir, batch_size, description=description)
    first = np.array([position[n] for n in pairs.first], dtype=np.int64)
    second = np.array([position[n] for n in pairs.second], dtype=np.int64)
    scores = pair_scores(embedded.vectors, first, second)
    has_face = embedded.valid[first] & embedded.valid[second]
    scores[~has_face] = NO_FACE_SCORE
    without = [names[i] for i in np.flatnonzero(~embedded.valid)]
    return ScoredPairs(pairs, scores, has_face, without)


def score_pair_file(
    embedder: Embedder, list_path: Path, root: Path, cache_dir: Path | None, batch_size: int, read=None
) -> ScoredPairs:
    """Read a pair list (``read``, default ``pairfiles.read_pair_list``) whose paths are under ``root`` and score it.

    Images are taken as face crops (or found with ``--detect``); ``FfemError``
    for a missing root or image.
    """
    from ffem_cli.evaluate.pairfiles import check_images_exist, read_pair_list

    root = Path(root)
    if not root.is_dir():
        raise FfemError(f"{root}: image root not found")
    pairs = (read or read_pair_list)(list_path)
    check_images_exist(pairs, root)
    sources = {name: FaceSource((root / name).resolve()) for name in dict.fromkeys([*pairs.first, *pairs.second])}
    return score_pair_list(embedder, pairs, sources, cache_dir, batch_size, "embed pairs")


def verification_summary(scored: ScoredPairs) -> dict:
    """AUC, EER (+ threshold; also as EE488B computes it, in percent) and pair counts (one ROC over all pairs)."""
    same = scored.pairs.same
    if same.all() or not same.any():
        kind = "same-person" if same.all() else "different-person"
        raise FfemError(f"{scored.pairs.source}: only {kind} pairs; verification needs both kinds")
    fpr, tpr, _ = metrics.roc_curve(scored.scores, same)
    eer, eer_threshold = metrics.equal_error_rate(scored.scores, same)
    return {
        "eer_ee488b_percent": metrics.ee488b_eer(scored.scores, same),
        "pairs": len(scored.pairs),
        "same_pairs": int(same.sum()),
        "different_pairs": int((~same).sum()),
        "pairs_without_face": int((~scored.has_face).sum()),
        "images_without_face": len(scored.images_without_face),
        "auc": metrics.auc(fpr, tpr),
        "eer": eer,
        "eer_threshold": eer_threshold,
    }


ONE_FOLD_RULE = (
    "one fold: the threshold is chosen on this list itself and applied to it, so the accuracy is "
    "optimistic (no held-out pairs)"
)


def fold_accuracy(scores: np.ndarray, pairs: PairList) -> dict:
    """Verification accuracy over ``pairs.folds`` (threshold from the other folds), mean ± std.

    A one-fold list (e.g. an LFW View 1 style file) is scored with the
    threshold chosen on the list itself; ``fold_rule`` in the result says
    which was done. ``FfemError`` when a fold holds one kind of pair only.
    """
    if np.unique(pairs.folds).size < 2:
        threshold, accuracy = metrics.best_threshold(scores, pairs.same)
        return {
            "mean": accuracy,
            "std": 0.0,
            "folds": [accuracy],
            "thresholds": [threshold],
            "fold_rule": ONE_FOLD_RULE,
        }
    try:
        result = metrics.kfold_accuracy(scores, pairs.same, pairs.folds)
    except ValueError as exc:
        raise FfemError(f"{pairs.source}: {exc}") from None
    return {
        "mean": result.mean,
        "std": result.std,
        "folds": result.accuracies.tolist(),
        "thresholds": result.thresholds.tolist(),
        "fold_rule": metrics.FOLD_RULE,
    }


def roc_points(scored: ScoredPairs) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = metrics.roc_curve(scored.scores, scored.pairs.same)
    return fpr, tpr
