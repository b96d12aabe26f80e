"""The seed projects' own losses against NumPy: SoftmaxCenter (seed 003), GroupFace's
group-aware inference model, the adversarial triplet (seed 000), the EE488B and MassFace
triplets."""

import keras
import numpy as np
import pytest

from ffem_cli.losses import MINERS, build_loss
from ffem_cli.losses.triplet import TripletLoss
from ffem_cli.models import build_embedder

C, D, B = 5, 8, 12


def unit(x, axis=-1):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-6)


def batch(seed=0, identities=3):
    rng = np.random.default_rng(seed)
    return unit(rng.normal(size=(B, D))).astype("float32"), rng.integers(0, identities, B)


def squared_distances(x):
    x = x.astype(np.float64)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def softmax_ce(logits, labels):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def test_seed_softmax_center_is_l2_softmax_plus_scaled_unit_center_distance():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(B, D)).astype("float32") * 3.0  # not unit: the loss normalises
    labels = rng.integers(0, C, B)
    layer = build_loss("softmax-center", C, D)
    assert (layer.scale, layer.center_weight) == (30.0, 1e-3)
    np.testing.assert_allclose(layer.bias.numpy(), 0.1)  # the seed's bias start
    kernel, centers = layer.kernel.numpy(), layer.centers.numpy()
    logits = 30.0 * unit(embeddings) @ unit(kernel, axis=0) + 0.1
    center = 30.0 * np.mean(np.sum((unit(embeddings) - unit(centers)[labels]) ** 2, axis=1))
    expected = softmax_ce(logits, labels) + 1e-3 * center
    assert float(layer(embeddings, labels)) == pytest.approx(expected, rel=1e-5)


def test_seed_softmax_center_learns_its_centres_by_gradient():
    import tensorflow as tf

    layer = build_loss("softmax-center", C, D, center_weight=1.0)
    x, y = batch(2, identities=C)
    assert any(v is layer.centers for v in layer.trainable_variables)
    with tf.GradientTape() as tape:
        value = layer(x, y)
    grad = tape.gradient(value, layer.centers)
    rows = np.abs(tf.convert_to_tensor(grad).numpy()).sum(axis=1)
    assert np.all(rows[np.unique(y)] > 0) and np.all(rows[np.setdiff1d(np.arange(C), y)] == 0)


def test_groupface_defaults_are_the_seed_ones():
    layer = build_loss("groupface", C, D)
    assert (layer.groups, layer.gdn_units, layer.group_weight) == (4, 256, 0.1)
    assert (layer.scale, layer.margin) == (60.0, 0.5)


def test_groupface_inference_embedder_returns_the_group_aware_embedding(tmp_path):
    embedder = build_embedder("tiny", "gap", D, 32)
    layer = build_loss("groupface", C, D, gdn_units=6)
    model = layer.inference_embedder(embedder)
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    instance = embedder.predict(pixels, verbose=0)
    expected = unit(np.asarray(layer.head(instance)))
    np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-5)
    assert not np.allclose(expected, instance, atol=1e-3)
    model.save(tmp_path / "e.keras")
    loaded = keras.models.load_model(tmp_path / "e.keras")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), expected, atol=1e-5)


def batch_hard(d, y):
    triplets = []
    for a in range(len(y)):
        positives = [k for k in range(len(y)) if k != a and y[k] == y[a]]
        negatives = [k for k in range(len(y)) if y[k] != y[a]]
        if positives and negatives:
            triplets.append((a, max(positives, key=lambda k: d[a, k]), min(negatives, key=lambda k: d[a, k])))
    return triplets


@pytest.mark.parametrize("seed", [0, 1])
def test_adversarial_triplet_matches_seed_000(seed):
    x, y = batch(seed)
    d = squared_distances(x)
    expected = np.mean([np.log(1 + d[a, p]) - np.log(1e-3 + d[a, n]) for a, p, n in batch_hard(d, y)])
    assert float(build_loss("adversarial-triplet", 0, D)(x, y)) == pytest.approx(expected, rel=1e-4)


def test_random_negative_miner_gives_every_pair_one_negative_of_another_identity():
    x, y = batch(3)
    miner = MINERS["random-negative"].build(seed=2)
    d = squared_distances(x).astype("float32")
    seen = set()
    for _ in range(10):
        a, p, n, valid = (np.asarray(t) for t in miner(d, y))
        rows = valid > 0
        pairs = {(i, j) for i in range(B) for j in range(B) if i != j and y[i] == y[j]}
        assert set(zip(a[rows], p[rows], strict=True)) == pairs
        assert np.all(y[a[rows]] != y[n[rows]])
        per_anchor = {}
        for i, k in zip(a[rows], n[rows], strict=True):
            assert per_anchor.setdefault(i, k) == k  # one negative per anchor
        seen |= set(n[rows].tolist())
    assert len(seen) > 3  # easy negatives too, not only violating ones


def test_ee488b_triplet_is_a_margin_0_1_hinge_over_random_negatives():
    x, y = batch(4)
    layer = build_loss("ee488b-triplet", 0, D)
    assert (layer.margin, type(layer.miner).__name__) == (0.1, "RandomNegativeMiner")
    d = squared_distances(x)
    state = layer.miner.seed_generator.state.numpy()
    value = float(layer(x, y))
    layer.miner.seed_generator.state.assign(state)  # the same draw again
    a, p, n, valid = (np.asarray(t) for t in layer.miner(d.astype("float32"), y))
    rows = valid > 0
    expected = np.mean(np.maximum(d[a, p] - d[a, n] + 0.1, 0)[rows])
    assert value == pytest.approx(expected, abs=1e-5)


def test_massface_triplet_defaults_and_the_batch_all_cap():
    massface = build_loss("massface-triplet", 0, D)
    assert (massface.margin, type(massface.miner).__name__) == (0.25, "BatchMinMaxMiner")
    x, y = batch(5)
    uncapped = build_loss("triplet", 0, D, miner="batch-all", margin=0.5)
    capped = TripletLoss(margin=0.5, miner="batch-all", max_triplets=7, seed=3)
    d = squared_distances(x).astype("float32")
    assert np.asarray(uncapped.mine_triplets(d, y)[3]).sum() > 7
    a, p, n, valid = (np.asarray(t) for t in capped.capped_triplets(d, y))
    assert a.shape == (7,) and valid.sum() == 7
    mined = [np.asarray(t) for t in uncapped.mine_triplets(d, y)]
    violating = {(int(i), int(j), int(k)) for i, j, k, v in zip(*mined, strict=True) if v}
    assert {(int(i), int(j), int(k)) for i, j, k in zip(a, p, n, strict=True)} <= violating
    state = capped.seed_generator.state.numpy()
    value = float(capped(x, y))
    capped.seed_generator.state.assign(state)
    a, p, n, _ = (np.asarray(t) for t in capped.capped_triplets(d, y))
    assert value == pytest.approx(np.mean(np.maximum(d[a, p] - d[a, n] + 0.5, 0)), abs=1e-5)


def test_pool_triplet_mines_batch_anchors_against_the_pool():
    x, y = batch(6)
    first, second = x[:6], x[6:]
    layer = build_loss("pool-triplet", 0, D, miner="batch-hard", margin=0.3, pool_size=8, refresh_every=1)
    empty_pool = float(layer(first, y[:6]))  # no training call yet: the pool is empty
    d = squared_distances(first)
    expected = np.mean([max(0.0, d[a, p] - d[a, n] + 0.3) for a, p, n in batch_hard(d, y[:6])])
    assert empty_pool == pytest.approx(expected, abs=1e-5)
    layer(first, y[:6], training=True)  # the pool now holds `first` (6 of 8 slots)
    np.testing.assert_array_equal(np.asarray(layer.pool_labels), [*y[:6], -1, -1])
    value = float(layer(second, y[6:]))
    both = np.concatenate([second, first])
    labels = np.concatenate([y[6:], y[:6]])
    d = squared_distances(both)
    triplets = [t for t in batch_hard(d, labels) if t[0] < 6]
    expected = np.mean([max(0.0, d[a, p] - d[a, n] + 0.3) for a, p, n in triplets])
    assert value == pytest.approx(expected, abs=1e-5)


def test_pool_refreshes_every_n_calls_oldest_first():
    x, y = batch(7)
    layer = build_loss("pool-triplet", 0, D, pool_size=6, refresh_every=2)
    for step in range(4):
        layer(x[:4], np.full(4, step), training=True)
    # calls 0 and 2 wrote (rows 0-3, then 4, 5, 0, 1); calls 1 and 3 did not
    np.testing.assert_array_equal(np.asarray(layer.pool_labels), [2, 2, 0, 0, 2, 2])
