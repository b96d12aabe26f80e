"""Thresholds at a FAR, their 95% interval and the open-set metrics against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from ffem_cli.inference import openset, thresholds
from ffem_cli.inference.pairs import (
    genuine_pairs,
    impostor_pair_count,
    make_pair_list,
    sample_impostor_pairs,
)


def brute_threshold(impostor: np.ndarray, far: float) -> float:
    """The lowest candidate threshold whose false-accept rate is <= far, by trying them all."""
    candidates = np.unique(np.r_[impostor, np.nextafter(impostor, math.inf)])
    rates = [(impostor >= t).mean() for t in candidates]
    return float(min(t for t, rate in zip(candidates, rates, strict=True) if rate <= far + 1e-12))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("far", [1e-1, 1e-2, 1e-3])
def test_threshold_at_far_matches_brute_force(seed, far):
    rng = np.random.default_rng(seed)
    impostor = np.round(rng.normal(0.0, 0.2, 4000), 3)  # rounded: many ties
    threshold = thresholds.threshold_at_far(impostor, far)
    assert threshold == brute_threshold(impostor, far)
    assert (impostor >= threshold).mean() <= far
    below = np.max(impostor[impostor < threshold])
    assert (impostor >= below).mean() > far  # one step lower breaks the FAR


def test_interval_is_the_order_statistic_interval():
    rng = np.random.default_rng(3)
    impostor = rng.normal(0.0, 0.2, 2000)
    far = 1e-2
    low, high = thresholds.threshold_interval(impostor, far)
    ranked = np.sort(impostor)[::-1]
    counts = np.arange(impostor.size + 1)
    j_hi = 1 + max(c for c in counts if binom.cdf(c, impostor.size, far) <= 0.025)
    j_lo = min(j for j in counts[1:] if binom.sf(j - 1, impostor.size, far) <= 0.025)
    assert (low, high) == (ranked[j_lo - 1], ranked[j_hi - 1])
    assert low < thresholds.threshold_at_far(impostor, far) < high


def test_interval_covers_the_true_threshold_about_95_percent():
    """Coverage over repeated draws from a normal impostor distribution with a known quantile."""
    from scipy.stats import norm

    far, n, trials = 0.05, 400, 400
    truth = norm.ppf(1 - far)
    rng = np.random.default_rng(4)
    covered = sum(
        low <= truth <= high
        for low, high in (thresholds.threshold_interval(rng.normal(size=n), far) for _ in range(trials))
    )
    assert 0.93 <= covered / trials <= 1.0


def test_supported_far_needs_a_bounded_interval():
    for far in thresholds.FAR_TARGETS:
        n = thresholds.needed_impostors(far)
        assert thresholds.supported(n, far) and not thresholds.supported(n - 1, far)
        assert (1 - far) ** n <= 0.025 < (1 - far) ** (n - 1)
    record = thresholds.calibrate_scores(np.full(50, 0.9), np.linspace(-0.5, 0.5, 5000))
    assert [t["far"] for t in record["thresholds"]] == [1e-1, 1e-2, 1e-3]
    assert set(record["omitted"]) == {"0.0001", "1e-05", "1e-06"}
    assert all(t["tar"] == 1.0 and t["observed_far"] <= t["far"] for t in record["thresholds"])


def brute_open_set(vectors, labels, valid, split, fpir):
    """Each probe's best gallery match by a Python loop; DIR at the FPIR threshold chosen by brute force."""
    gallery = [g for g in split.gallery if valid[g]]

    def best(probe):
        if not valid[probe]:
            return -math.inf, -1
        scores = [float(vectors[probe] @ vectors[g]) for g in gallery]
        top = int(np.argmax(scores))
        return scores[top], labels[gallery[top]]

    mated = [best(p) for p in split.mated]
    nonmated = np.array([best(p)[0] for p in split.nonmated])
    rank1 = np.mean([found == labels[p] for (_, found), p in zip(mated, split.mated, strict=True)])
    threshold = brute_threshold(nonmated, fpir)
    hits = np.mean([s >= threshold and found == labels[p] for (s, found), p in zip(mated, split.mated, strict=True)])
    return rank1, hits


def test_open_set_metrics_match_a_direct_implementation():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(400), 6)
    centres = rng.normal(size=(400, 8))
    vectors = centres[labels] + 0.9 * rng.normal(size=(labels.size, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    valid = rng.random(labels.size) > 0.02
    split = openset.split_open_set(labels, valid, 0.5, seed=7)
    assert np.intersect1d(labels[split.gallery], split.unknown_identities).size == 0
    assert set(labels[split.nonmated]) == set(split.unknown_identities)
    result = openset.open_set_metrics(vectors, labels, valid, split, fpir_targets=(1e-1, 1e-2))
    for fpir in (1e-1, 1e-2):
        rank1, dir_ = brute_open_set(vectors, labels, valid, split, fpir)
        assert result.metrics["rank1_identification_rate"] == pytest.approx(rank1)
        assert result.metrics["dir_at_fpir"][f"{fpir:g}"]["dir"] == pytest.approx(dir_, abs=1e-12)
    fpir, dir_ = openset.dir_fpir_curve(result)
    assert fpir[-1] == pytest.approx((valid[split.nonmated]).mean()) and dir_[-1] == pytest.approx(rank1)
    assert np.all(np.diff(fpir) >= 0) and np.all(np.diff(dir_) >= 0)
    again = openset.split_open_set(labels, valid, 0.5, seed=7)
    assert np.array_equal(again.gallery, split.gallery)


def test_pair_helpers_enumerate_and_sample_correctly():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    g1, g2 = genuine_pairs(labels)
    assert sorted(zip(g1.tolist(), g2.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2), (3, 4), (6, 7)]
    assert impostor_pair_count(labels) == 28 - 5
    a, b = sample_impostor_pairs(labels, 100, np.random.default_rng(0))
    assert len(set(zip(a.tolist(), b.tolist(), strict=True))) == 23 and np.all(labels[a] != labels[b])
    a, b = sample_impostor_pairs(labels, 10, np.random.default_rng(0))
    assert len(set(zip(a.tolist(), b.tolist(), strict=True))) == 10 and np.all((a < b) & (labels[a] != labels[b]))


def test_pair_list_folds_are_identity_disjoint_and_seeded():
    labels = np.repeat(np.arange(60), 5)
    draw = make_pair_list(labels, 200, folds=10, seed=3)
    assert draw.same.sum() == 200 and (~draw.same).sum() == 200
    for fold in range(10):
        mine = set(labels[draw.first[draw.fold == fold]]) | set(labels[draw.second[draw.fold == fold]])
        other = set(labels[draw.first[draw.fold != fold]]) | set(labels[draw.second[draw.fold != fold]])
        assert not mine & other
    assert np.all((labels[draw.first] == labels[draw.second]) == draw.same)
    assert len(set(zip(draw.first.tolist(), draw.second.tolist(), strict=True))) == 400
    again = make_pair_list(labels, 200, folds=10, seed=3)
    assert np.array_equal(draw.first, again.first) and np.array_equal(draw.second, again.second)


def test_pair_list_is_not_filled_by_one_big_identity():
    labels = np.r_[np.zeros(300, int), np.repeat(np.arange(1, 41), 3)]  # one person with 300 photos, 40 with 3
    draw = make_pair_list(labels, 40, folds=2, seed=0)
    genuine_of_big = np.sum(draw.same & (labels[draw.first] == 0))
    assert genuine_of_big <= 2  # spread over identities in turn, not uniform over the 44,850 pairs of person 0
    impostor_with_big = np.sum(~draw.same & ((labels[draw.first] == 0) | (labels[draw.second] == 0)))
    assert impostor_with_big <= 10
