"""Miners, pair losses and proxy losses against NumPy written from the papers."""

import itertools

import numpy as np
import pytest

from ffem_cli.losses import MINERS, build_loss
from ffem_cli.losses.distances import DISTANCES
from ffem_cli.losses.miners import triplets_to_pairs

B, D, MARGIN = 12, 6, 0.2


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def np_distance(name, x):
    x = x.astype(np.float64)
    if name == "cosine":
        return 1 - unit(x) @ unit(x).T
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return squared if name == "squared-euclidean" else np.sqrt(squared)


def random_batch(seed, identities=3):
    rng = np.random.default_rng(seed)
    return unit(rng.normal(size=(B, D))).astype("float32"), rng.integers(0, identities, B)


def hand_batches():
    """One identity only; all labels distinct (no valid triplet); duplicates; zero rows."""
    x, _ = random_batch(9)
    duplicates = np.repeat(x[:4], 3, axis=0)
    zeros = x.copy()
    zeros[:3] = 0.0
    return {
        "one-identity": (x, np.zeros(B, int)),
        "all-distinct": (x, np.arange(B)),
        "duplicates": (duplicates, np.repeat([0, 1, 0, 2], 3)),
        "zero-norm": (zeros, np.arange(B) % 3),
    }


# ---- NumPy miners: each returns the set of chosen (a, p, n) --------------------------------


def triplet_cands(d, y):
    for a, p, n in itertools.product(range(len(y)), repeat=3):
        if a != p and y[a] == y[p] and y[a] != y[n]:
            yield a, p, n


def np_batch_all(d, y, m):
    return {(a, p, n) for a, p, n in triplet_cands(d, y) if d[a, n] - d[a, p] < m}


def np_batch_hard(d, y, m):
    chosen = set()
    for a in range(len(y)):
        pos = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        neg = [n for n in range(len(y)) if y[n] != y[a]]
        if pos and neg:
            chosen.add((a, max(pos, key=lambda p: d[a, p]), min(neg, key=lambda n: d[a, n])))
    return chosen


def np_semi_hard(d, y, m):
    chosen = set()
    for a, p in itertools.permutations(range(len(y)), 2):
        if y[a] != y[p]:
            continue
        semi = [n for n in range(len(y)) if y[n] != y[a] and d[a, p] < d[a, n] < d[a, p] + m]
        if semi:
            chosen.add((a, p, min(semi, key=lambda n: d[a, n])))
    return chosen


def np_min_positive(farthest):
    def mine(d, y, m):
        chosen = set()
        for a in range(len(y)):
            neg = [n for n in range(len(y)) if y[n] != y[a]]
            if not neg:
                continue
            n = min(neg, key=lambda n: d[a, n])
            pos = [p for p in range(len(y)) if p != a and y[p] == y[a] and d[a, n] - d[a, p] < m]
            if pos:
                chosen.add((a, (max if farthest else min)(pos, key=lambda p: d[a, p]), n))
        return chosen

    return mine


NP_MINERS = {
    "batch-all": np_batch_all,
    "batch-hard": np_batch_hard,
    "batch-semi-hard": np_semi_hard,
    "batch-min-min": np_min_positive(False),
    "batch-min-max": np_min_positive(True),
}


def mined_set(miner, d, y, margin=MARGIN):
    a, p, n, valid = (np.asarray(t) for t in miner(d.astype("float32"), y, margin=margin))
    return {(int(i), int(j), int(k)) for i, j, k, v in zip(a, p, n, valid, strict=True) if v}


@pytest.mark.parametrize("name", sorted(NP_MINERS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_miners_match_numpy(name, seed):
    x, y = random_batch(seed)
    d = np_distance("squared-euclidean", x)
    miner = MINERS[name].build()
    assert mined_set(miner, d, y) == NP_MINERS[name](d, y, MARGIN)


def test_batch_random_draws_violating_negatives_for_every_pair():
    x, y = random_batch(3)
    d = np_distance("squared-euclidean", x)
    miner = MINERS["batch-random"].build(seed=1)
    violating = np_batch_all(d, y, MARGIN)
    draws = [mined_set(miner, d, y) for _ in range(20)]
    pairs_with_negatives = {(a, p) for a, p, _ in violating}
    for drawn in draws:
        assert drawn <= violating
        assert {(a, p) for a, p, _ in drawn} == pairs_with_negatives
    assert len(set().union(*draws)) > len(pairs_with_negatives)  # different negatives drawn


def test_multi_similarity_miner_matches_numpy():
    x, y = random_batch(4)
    s = unit(x) @ unit(x).T
    miner = MINERS["multi-similarity"].build(epsilon=0.1)
    pos, neg = (np.asarray(t) for t in miner((1 - s).astype("float32"), y))
    for a in range(B):
        positives = [k for k in range(B) if k != a and y[k] == y[a]]
        negatives = [k for k in range(B) if y[k] != y[a]]
        for k in range(B):
            keep_neg = bool(positives) and k in negatives and s[a, k] + 0.1 > min(s[a, positives])
            keep_pos = bool(negatives) and k in positives and s[a, k] - 0.1 < max(s[a, negatives])
            assert neg[a, k] == keep_neg and pos[a, k] == keep_pos


@pytest.mark.parametrize("name", sorted(DISTANCES))
def test_distances_match_numpy(name):
    x, _ = random_batch(5)
    x[3] = x[1]
    x[4] = 0.0
    got = np.asarray(DISTANCES[name](x))
    np.testing.assert_allclose(got, np_distance(name, x), atol=2e-5)


# ---- pair losses ---------------------------------------------------------------------------


def np_triplet(d, triplets, m):
    if not triplets:
        return 0.0
    return float(np.mean([max(0.0, d[a, p] - d[a, n] + m) for a, p, n in triplets]))


@pytest.mark.parametrize(
    "miner", ["batch-all", "batch-hard", "batch-semi-hard", "batch-min-min", "batch-min-max", None]
)
@pytest.mark.parametrize("distance", ["squared-euclidean", "cosine"])
def test_triplet_loss_over_each_miner(miner, distance):
    x, y = random_batch(6)
    d = np_distance(distance, x)
    layer = build_loss("triplet", 0, D, miner=miner, distance=distance, margin=MARGIN)
    chosen = NP_MINERS[miner](d, y, MARGIN) if miner else set(triplet_cands(d, y))
    assert float(layer(x, y)) == pytest.approx(np_triplet(d, chosen, MARGIN), abs=1e-5)


@pytest.mark.parametrize("case", sorted(hand_batches()))
@pytest.mark.parametrize("loss", ["triplet", "contrastive", "multi-similarity"])
@pytest.mark.parametrize(
    "miner",
    [
        "batch-all",
        "batch-hard",
        "batch-semi-hard",
        "batch-random",
        "batch-min-min",
        "batch-min-max",
        "multi-similarity",
        None,
    ],
)
def test_pair_losses_compose_with_every_miner_on_hand_batches(case, loss, miner):
    x, y = hand_batches()[case]
    value = float(build_loss(loss, 0, D, miner=miner)(x, y))
    assert np.isfinite(value)
    if case in ("one-identity", "all-distinct") and (miner is not None or loss == "triplet"):
        assert value == 0.0  # no negative (or no positive): nothing mined, loss exactly 0


def np_pairs_from(name, d, y, margin):
    """(positive, negative) pair sets that a miner name gives a pair loss, in NumPy."""
    if name is None:
        pos = {(a, p) for a, p in itertools.permutations(range(len(y)), 2) if y[a] == y[p]}
        neg = {(a, n) for a, n in itertools.product(range(len(y)), repeat=2) if y[a] != y[n]}
        return pos, neg
    triplets = NP_MINERS[name](d, y, margin)
    return {(a, p) for a, p, _ in triplets}, {(a, n) for a, _, n in triplets}


@pytest.mark.parametrize("miner", [None, "batch-hard", "batch-all"])
def test_contrastive_matches_hadsell(miner):
    x, y = random_batch(7)
    d = np_distance("euclidean", x)
    pos, neg = np_pairs_from(miner, d, y, 1.0 - 0.1)
    terms = [max(0.0, d[a, p] - 0.1) ** 2 for a, p in pos]
    terms += [max(0.0, 1.0 - d[a, n]) ** 2 for a, n in neg]
    layer = build_loss("contrastive", 0, D, miner=miner, pos_margin=0.1, neg_margin=1.0)
    assert float(layer(x, y)) == pytest.approx(0.5 * np.mean(terms), rel=1e-4)


@pytest.mark.parametrize("miner", [None, "multi-similarity", "batch-hard"])
def test_multi_similarity_loss_matches_wang_2019(miner):
    x, y = random_batch(8)
    s = unit(x) @ unit(x).T
    d = 1 - s
    if miner == "multi-similarity":
        pm, nm = (np.asarray(t) for t in MINERS[miner].build()(d.astype("float32"), y))
        pos = set(zip(*np.nonzero(pm), strict=True))
        neg = set(zip(*np.nonzero(nm), strict=True))
    else:
        pos, neg = np_pairs_from(miner, d, y, 0.2)
    alpha, beta, lam = 2.0, 50.0, 1.0
    total = 0.0
    for i in range(B):
        total += np.log1p(sum(np.exp(-alpha * (s[i, k] - lam)) for a, k in pos if a == i)) / alpha
        total += np.log1p(sum(np.exp(beta * (s[i, k] - lam)) for a, k in neg if a == i)) / beta
    layer = build_loss("multi-similarity", 0, D, miner=miner)
    assert float(layer(x, y)) == pytest.approx(total / B, rel=1e-4)


def test_triplets_to_pairs_deduplicates():
    a = np.array([0, 0, 1], "int32")
    p = np.array([1, 1, 0], "int32")
    n = np.array([2, 3, 2], "int32")
    pos, neg = (np.asarray(t) for t in triplets_to_pairs((a, p, n, np.ones(3, "float32")), 4))
    assert pos.sum() == 2 and pos[0, 1] == 1 and pos[1, 0] == 1
    assert neg.sum() == 3 and neg[0, 2] == neg[0, 3] == neg[1, 2] == 1


# ---- proxy losses --------------------------------------------------------------------------


def proxy_cos(layer, x):
    return unit(x.astype(np.float64)) @ unit(layer.proxies.numpy().T.astype(np.float64)).T


@pytest.mark.parametrize("labels", ["random", "one-identity"])
def test_proxy_nca_matches_movshovitz_attias(labels):
    x, y = random_batch(10)
    if labels == "one-identity":
        y = np.zeros(B, int)
    layer = build_loss("proxy-nca", 4, D, scale=3.0)
    dist = ((3 * unit(x)[:, None, :] - 3 * unit(layer.proxies.numpy().T)[None]) ** 2).sum(-1)
    expected = np.mean(
        [dist[i, y[i]] + np.log(sum(np.exp(-dist[i, z]) for z in range(4) if z != y[i])) for i in range(B)]
    )
    assert float(layer(x, y)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("labels", ["random", "one-identity"])
def test_proxy_anchor_matches_kim_2020(labels):
    x, y = random_batch(11)
    if labels == "one-identity":
        y = np.full(B, 2)
    layer = build_loss("proxy-anchor", 5, D)
    s = proxy_cos(layer, x)
    with_pos = [c for c in range(5) if np.any(y == c)]
    pull = sum(np.log1p(np.sum(np.exp(-32 * (s[y == c, c] - 0.1)))) for c in with_pos)
    push = sum(np.log1p(np.sum(np.exp(32 * (s[y != c, c] + 0.1)))) for c in range(5))
    expected = pull / len(with_pos) + push / 5
    assert float(layer(x, y)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_softtriple_matches_qian_2019(k):
    x, y = random_batch(12)
    layer = build_loss("softtriple", 4, D, centers_per_class=k)
    w = unit(layer.proxies.numpy().T).T.reshape(D, 4, k)  # unit columns, class-major
    sims = np.einsum("bd,dck->bck", unit(x), w)
    attention = np.exp(sims / 0.1)
    attention /= attention.sum(2, keepdims=True)
    big_s = (attention * sims).sum(2)
    logits = 20 * (big_s - 0.01 * np.eye(4)[y])
    logits -= logits.max(1, keepdims=True)
    ce = -np.mean(logits[np.arange(B), y] - np.log(np.exp(logits).sum(1)))
    reg = 0.0
    if k > 1:
        for c in range(4):
            for t, u in itertools.combinations(range(k), 2):
                reg += np.sqrt(2 + 1e-5 - 2 * w[:, c, t] @ w[:, c, u])
        reg /= 4 * k * (k - 1)
    assert float(layer(x, y)) == pytest.approx(ce + 0.2 * reg, rel=1e-4)
    np.testing.assert_allclose(layer.logits(x), big_s, atol=1e-5)
