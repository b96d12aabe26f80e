"""Verification and retrieval metrics on similarity scores (pure NumPy).

Conventions: a *score* is a cosine similarity (higher = more alike); a pair
is predicted "same person" when ``score >= threshold``. ``labels`` of pairs
are booleans (True = same person / target, False = different / imposter).

Verification
    ``roc_curve``/``auc`` follow scikit-learn's definitions (one ROC point per
    distinct score, trapezoidal area). ``equal_error_rate`` interpolates the
    ROC where the false-accept rate equals the false-reject rate.
    ``ee488b_eer`` is the EE488B trainer's figure: ``max(FAR, FRR)`` at the ROC
    point where they are closest, in percent.
    ``tar_at_far`` is the best true-accept rate whose false-accept rate does
    not exceed the target. ``kfold_accuracy`` is the LFW protocol (Huang et
    al., 2007): the accuracy-maximising threshold of 9 folds is applied to the
    10th; ``stratified_folds`` builds folds that hold both kinds of pair
    whatever the order of the list. ``facenet_val_at_far`` reproduces davidsandberg/facenet's
    ``calculate_val`` (squared-L2 thresholds, FAR target interpolated on the
    training folds).

Retrieval (on a matrix of the nearest neighbours' labels, best first)
    ``recall_at_k``: a query is a hit when any of its k nearest neighbours has
    its label (Recall@1 = precision@1). ``r_precision`` and ``map_at_r``
    follow Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020), as
    pytorch-metric-learning's ``AccuracyCalculator`` computes them: R is the
    number of references sharing the query's label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    return scores, labels


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)``, one per distinct score, plus (0, 0) at +inf.

    Identical to ``sklearn.metrics.roc_curve(labels, scores,
    drop_intermediate=False)``. Needs both classes.
    """
    scores, labels = _as_scores_labels(scores, labels)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("ROC needs both same-person and different-person pairs")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    true_pos = np.cumsum(sorted_labels)[last_of_value]
    false_pos = (last_of_value + 1) - true_pos
    tpr = np.r_[0.0, true_pos / positives]
    fpr = np.r_[0.0, false_pos / negatives]
    thresholds = np.r_[np.inf, sorted_scores[last_of_value]]
    return fpr, tpr, thresholds


def auc(fpr, tpr) -> float:
    """Area under a ROC curve by the trapezoidal rule."""
    return float(np.trapezoid(tpr, fpr))


def equal_error_rate(scores, labels) -> tuple[float, float]:
    """``(eer, threshold)``: where false-accept rate = false-reject rate (1 - TPR).

    Linear interpolation between the two ROC points that bracket the crossing;
    the threshold is interpolated the same way (finite end points only).
    """
    fpr, tpr, thresholds = roc_curve(scores, labels)
    fnr = 1.0 - tpr
    gap = fnr - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.flatnonzero(gap <= 0)[0])
    if i == 0 or gap[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    weight = gap[i - 1] / (gap[i - 1] - gap[i])
    eer = fpr[i - 1] + weight * (fpr[i] - fpr[i - 1])
    low, high = thresholds[i - 1], thresholds[i]
    threshold = high if not np.isfinite(low) else low + weight * (high - low)
    return float(eer), float(threshold)


def ee488b_eer(scores, labels) -> float:
    """EER in percent as the EE488B trainer (``voxceleb_trainer``'s ``tuneThresholdfromScore``) computes it.

    No interpolation: on scikit-learn's default ROC (``drop_intermediate``:
    points inside straight runs of the curve are dropped), at the point where
    ``|FRR - FAR|`` is smallest (the first from the strictest threshold),
    ``max(FAR, FRR)``, times 100.
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    # scikit-learn keeps the end points and each point where the curve turns
    turns = np.r_[True, (np.diff(fpr[1:], 2) != 0) | (np.diff(tpr[1:], 2) != 0), True]
    fpr, tpr = np.r_[0.0, fpr[1:][turns]], np.r_[0.0, tpr[1:][turns]]
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float(max(fpr[i], fnr[i]) * 100.0)


def tar_at_far(scores, labels, far_target: float) -> tuple[float, float]:
    """``(tar, threshold)``: the highest true-accept rate with false-accept rate <= ``far_target``."""
    fpr, tpr, thresholds = roc_curve(scores, labels)
    allowed = np.flatnonzero(fpr <= far_target + 1e-12)
    best = allowed[np.argmax(tpr[allowed])]
    return float(tpr[best]), float(thresholds[best])


def best_threshold(scores, labels) -> tuple[float, float]:
    """``(threshold, accuracy)`` maximising accuracy of ``score >= threshold`` on these pairs.

    Candidates are +inf (all "different"), the midpoints between consecutive
    distinct scores, and -inf (all "same"); the lowest-index candidate wins a
    tie, scanning from +inf downwards.
    """
    scores, labels = _as_scores_labels(scores, labels)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    n = scores.size
    negatives = n - int(labels.sum())
    # accepting the top i pairs, i = 0..n; valid only where score i-1 != score i
    true_pos = np.r_[0, np.cumsum(sorted_labels)]
    accepted = np.arange(n + 1)
    correct = true_pos + (negatives - (accepted - true_pos))
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = sorted_scores[:-1] != sorted_scores[1:]
    correct = np.where(valid, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        threshold = np.inf
    elif i == n:
        threshold = -np.inf
    else:
        threshold = (sorted_scores[i - 1] + sorted_scores[i]) / 2
    return float(threshold), float(correct[i] / n)


@dataclass(frozen=True)
class KFoldResult:
    """Per-fold test accuracies and the thresholds chosen on the other folds."""

    accuracies: np.ndarray
    thresholds: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Population standard deviation over folds (as LFW results are reported)."""
        return float(self.accuracies.std())


FOLD_RULE = (
    "fold i holds the i-th tenth (1/k) of the same-person pairs and the i-th tenth of the "
    "different-person pairs, each in file order"
)


def stratified_folds(labels, num_folds: int = 10) -> np.ndarray:
    """Fold id ``(N,)`` per pair: the i-th of ``n`` pairs of a kind goes to fold ``i * num_folds // n``.

    Every fold holds both kinds whatever the order of the list (a file with
    all same-person pairs first still gets ten mixed folds). On LFW's
    ``pairs.txt`` (per fold 300 same then 300 different lines) this gives
    exactly the official folds. ``ValueError`` when a kind has fewer than
    ``num_folds`` pairs (some fold would lack it).
    """
    labels = np.asarray(labels).astype(bool).ravel()
    folds = np.empty(labels.shape[0], dtype=np.int64)
    for kind, name in ((True, "same-person"), (False, "different-person")):
        where = np.flatnonzero(labels == kind)
        if where.size < num_folds:
            raise ValueError(f"{num_folds} folds need at least {num_folds} {name} pairs, the list has {where.size}")
        folds[where] = np.arange(where.size) * num_folds // where.size
    return folds


def kfold_accuracy(scores, labels, folds) -> KFoldResult:
    """Verification accuracy with the threshold chosen on the other folds.

    ``folds`` gives each pair's fold id (e.g. ``stratified_folds(labels)``).
    For each fold, the accuracy-maximising threshold on all other folds
    (``best_threshold``) is applied to that fold. ``ValueError`` when there
    are fewer than two folds or a fold lacks one kind of pair (its accuracy
    would measure one class only).
    """
    scores, labels = _as_scores_labels(scores, labels)
    folds = np.asarray(folds).ravel()
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    for fold in fold_ids:
        kinds = np.unique(labels[folds == fold])
        if kinds.size < 2:
            kind = "same-person" if kinds[0] else "different-person"
            raise ValueError(f"fold {int(fold) + 1} holds only {kind} pairs; folds must hold both kinds ({FOLD_RULE})")
    accuracies, thresholds = [], []
    for fold in fold_ids:
        test = folds == fold
        threshold, _ = best_threshold(scores[~test], labels[~test])
        predicted = scores[test] >= threshold
        accuracies.append(float(np.mean(predicted == labels[test])))
        thresholds.append(threshold)
    return KFoldResult(np.array(accuracies), np.array(thresholds))


def facenet_val_at_far(scores, labels, folds, far_target: float = 1e-3) -> tuple[float, float, float]:
    """``(val_mean, val_std, far_mean)`` exactly as davidsandberg/facenet's ``calculate_val``.

    Scores (cosine similarities of L2-normalised embeddings) become squared
    L2 distances ``d = 2 - 2 s``; thresholds run ``0, 0.001, ..., 3.999``; a
    pair is accepted when ``d < threshold``. On the training folds the
    threshold giving ``far_target`` is linearly interpolated from the
    (FAR, threshold) curve (0 when that FAR is never reached); VAL (= TAR) and
    FAR are then measured on the held-out fold.
    """
    scores, labels = _as_scores_labels(scores, labels)
    folds = np.asarray(folds).ravel()
    vals, fars = [], []
    for fold in np.unique(folds):
        test = folds == fold
        val, far = facenet_val_split(scores[~test], labels[~test], scores[test], labels[test], far_target)
        vals.append(val)
        fars.append(far)
    return float(np.mean(vals)), float(np.std(vals)), float(np.mean(fars))


def facenet_val_split(train_scores, train_labels, test_scores, test_labels, far_target: float) -> tuple[float, float]:
    """``(val, far)`` on the test pairs with facenet's threshold for ``far_target`` from the training pairs."""
    train_scores, train_labels = _as_scores_labels(train_scores, train_labels)
    test_scores, test_labels = _as_scores_labels(test_scores, test_labels)
    grid = np.arange(0, 4, 0.001)
    negatives = np.sort(2.0 - 2.0 * train_scores[~train_labels])
    far_train = np.searchsorted(negatives, grid, side="left") / max(negatives.size, 1)
    threshold = float(np.interp(far_target, far_train, grid)) if far_train.max() >= far_target else 0.0
    accepted = (2.0 - 2.0 * test_scores) < threshold
    val = np.sum(accepted & test_labels) / max(test_labels.sum(), 1)
    far = np.sum(accepted & ~test_labels) / max((~test_labels).sum(), 1)
    return float(val), float(far)


def recall_at_k(neighbour_labels: np.ndarray, query_labels: np.ndarray, k: int) -> float:
    """Fraction of queries with their own label among the first ``k`` neighbours.

    ``neighbour_labels``: ``(Q, K)`` labels of each query's nearest
    references, best first (K >= k; -1 pads missing neighbours).
    """
    hits = neighbour_labels[:, :k] == np.asarray(query_labels)[:, None]
    return float(hits.any(axis=1).mean())


def r_precision_and_map_at_r(
    neighbour_labels: np.ndarray, query_labels: np.ndarray, relevant_counts: np.ndarray
) -> tuple[float, float]:
    """``(R-precision, MAP@R)`` averaged over queries (Musgrave et al., 2020).

    ``relevant_counts[q]`` = R, the number of references with the query's
    label (the query itself excluded); every R must be >= 1 and
    ``neighbour_labels`` must hold at least ``max(R)`` columns.
    For a query with R relevant references and relevance ``rel(i)`` of its
    i-th neighbour: R-precision = sum_{i<=R} rel(i) / R and
    MAP@R = (1/R) sum_{i<=R} rel(i) * precision@i.
    """
    query_labels = np.asarray(query_labels)
    relevant_counts = np.asarray(relevant_counts)
    depth = int(relevant_counts.max())
    if neighbour_labels.shape[1] < depth:
        raise ValueError(f"need {depth} neighbours per query, got {neighbour_labels.shape[1]}")
    relevant = neighbour_labels[:, :depth] == query_labels[:, None]
    within_r = np.arange(1, depth + 1)[None, :] <= relevant_counts[:, None]
    relevant &= within_r
    hits_so_far = np.cumsum(relevant, axis=1)
    precision_at_i = hits_so_far / np.arange(1, depth + 1)[None, :]
    r_precision = hits_so_far[:, -1] / relevant_counts
    map_at_r = np.sum(precision_at_i * relevant, axis=1) / relevant_counts
    return float(r_precision.mean()), float(map_at_r.mean())
