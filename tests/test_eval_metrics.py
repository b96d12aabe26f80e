"""Verification and retrieval metrics against hand-worked answers, scikit-learn and direct code."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from ffem_cli.evaluate import metrics

# Hand-worked example: scores of 4 same-person (T) and 4 different-person (F) pairs.
#   sorted: 0.9 T, 0.8 T, 0.7 F, 0.6 T, 0.5 F, 0.4 T, 0.3 F, 0.2 F
HAND_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
HAND_LABELS = np.array([1, 1, 0, 1, 0, 1, 0, 0], dtype=bool)


def test_roc_and_auc_hand_worked():
    fpr, tpr, thresholds = metrics.roc_curve(HAND_SCORES, HAND_LABELS)
    assert np.allclose(tpr, [0, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0])
    assert np.allclose(fpr, [0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 1.0])
    assert thresholds[0] == np.inf and thresholds[-1] == 0.2
    # AUC = P(score_T > score_F): T scores beat 4+4+3+2 of the 16 T/F combinations
    assert metrics.auc(fpr, tpr) == pytest.approx(13 / 16)


def test_eer_hand_worked():
    # FNR = 1 - TPR crosses FPR between (fpr .25, tpr .75) and (fpr .5, tpr .75): at 0.25
    eer, threshold = metrics.equal_error_rate(HAND_SCORES, HAND_LABELS)
    assert eer == pytest.approx(0.25)
    assert 0.4 <= threshold <= 0.6


def test_eer_interpolates_between_points():
    # a T/F tie makes a diagonal ROC segment: points (0,0) (0,.5) (.5,1) (1,1);
    # FNR-FPR goes .5 -> -.5 along (0,.5)-(.5,1), so it is 0 half way, at FPR .25
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0], dtype=bool)
    eer, _ = metrics.equal_error_rate(scores, labels)
    assert eer == pytest.approx(0.25)


def test_tar_at_far_hand_worked():
    assert metrics.tar_at_far(HAND_SCORES, HAND_LABELS, 0.0)[0] == pytest.approx(0.5)
    assert metrics.tar_at_far(HAND_SCORES, HAND_LABELS, 0.25)[0] == pytest.approx(0.75)
    tar, threshold = metrics.tar_at_far(HAND_SCORES, HAND_LABELS, 0.5)
    assert tar == pytest.approx(1.0) and threshold == pytest.approx(0.4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_matches_sklearn_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(500) < 0.4
    scores = np.round(rng.normal(labels * 0.8, 1.0), 2)  # rounding makes ties
    fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thresholds = sk_roc_curve(labels, scores, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)
    assert np.allclose(thresholds[1:], sk_thresholds[1:])
    assert metrics.auc(fpr, tpr) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_eer_on_random_scores_is_where_rates_meet():
    rng = np.random.default_rng(3)
    labels = rng.random(4000) < 0.5
    scores = rng.normal(labels * 1.5, 1.0)
    eer, threshold = metrics.equal_error_rate(scores, labels)
    far = np.mean(scores[~labels] >= threshold)
    frr = np.mean(scores[labels] < threshold)
    assert far == pytest.approx(eer, abs=2e-3) and frr == pytest.approx(eer, abs=2e-3)
    # two equal-variance Gaussians 1.5 apart: EER = Phi(-0.75) = 0.2266
    assert eer == pytest.approx(0.2266, abs=0.02)


def direct_kfold_accuracy(scores, labels, folds):
    """Brute force: try every candidate threshold of the training folds, first best wins."""
    accuracies = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        values = np.unique(scores[train])[::-1]
        candidates = [np.inf] + [(a + b) / 2 for a, b in zip(values[:-1], values[1:], strict=True)] + [-np.inf]
        best, best_acc = None, -1.0
        for t in candidates:
            acc = np.mean((scores[train] >= t) == labels[train])
            if acc > best_acc:
                best, best_acc = t, acc
        accuracies.append(np.mean((scores[test] >= best) == labels[test]))
    return np.array(accuracies)


@pytest.mark.parametrize("seed", [0, 1])
def test_kfold_accuracy_matches_direct_implementation(seed):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    scores = np.round(rng.normal(labels * 1.2, 1.0), 1)
    folds = np.arange(600) // 60
    result = metrics.kfold_accuracy(scores, labels, folds)
    expected = direct_kfold_accuracy(scores, labels, folds)
    assert np.allclose(result.accuracies, expected)
    assert result.mean == pytest.approx(expected.mean())
    assert result.std == pytest.approx(expected.std())


def test_kfold_accuracy_perfectly_separable_is_one():
    labels = np.tile([True, False], 50)
    scores = np.where(labels, 0.8, 0.1) + np.linspace(0, 0.05, 100)
    result = metrics.kfold_accuracy(scores, labels, np.arange(100) // 10)
    assert result.mean == 1.0 and result.std == 0.0
    assert np.all((result.thresholds > 0.15) & (result.thresholds < 0.8))


def direct_facenet_val(scores, labels, folds, far_target):
    """davidsandberg/facenet calculate_val, transcribed loop for loop."""
    dist = 2 - 2 * scores
    thresholds = np.arange(0, 4, 0.001)
    vals, fars = [], []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        far_train = np.array([np.sum((dist[train] < t) & ~labels[train]) / np.sum(~labels[train]) for t in thresholds])
        threshold = np.interp(far_target, far_train, thresholds) if far_train.max() >= far_target else 0.0
        pred = dist[test] < threshold
        vals.append(np.sum(pred & labels[test]) / np.sum(labels[test]))
        fars.append(np.sum(pred & ~labels[test]) / np.sum(~labels[test]))
    return np.mean(vals), np.std(vals), np.mean(fars)


def test_facenet_val_matches_transcription():
    rng = np.random.default_rng(5)
    labels = np.tile(np.r_[np.ones(50, bool), np.zeros(50, bool)], 10)
    scores = np.clip(rng.normal(labels * 0.5, 0.25), -1, 1)
    folds = np.arange(1000) // 100
    got = metrics.facenet_val_at_far(scores, labels, folds, far_target=0.05)
    assert np.allclose(got, direct_facenet_val(scores, labels, folds, 0.05))


def test_recall_at_k_hand_worked():
    neighbour_labels = np.array([[1, 0, 2], [2, 2, 0], [0, 1, 1], [3, 3, 3]])
    query_labels = np.array([0, 2, 1, 1])
    assert metrics.recall_at_k(neighbour_labels, query_labels, 1) == pytest.approx(0.25)
    assert metrics.recall_at_k(neighbour_labels, query_labels, 2) == pytest.approx(0.75)
    assert metrics.recall_at_k(neighbour_labels, query_labels, 3) == pytest.approx(0.75)


def test_r_precision_and_map_at_r_hand_worked():
    # Query A, R = 3, relevance of the top 3: 1 0 1 -> R-precision 2/3, MAP@R (1 + 2/3) / 3
    # Query B, R = 2, relevance 0 1 -> R-precision 1/2, MAP@R (1/2) / 2
    neighbour_labels = np.array([[7, 5, 7, 7], [1, 4, 4, 4]])
    r_precision, map_at_r = metrics.r_precision_and_map_at_r(neighbour_labels, np.array([7, 4]), np.array([3, 2]))
    assert r_precision == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert map_at_r == pytest.approx(((1 + 2 / 3) / 3 + 0.25) / 2)
