"""Classification losses against NumPy written from each paper's equation."""

import math

import numpy as np
import pytest

from ffem_cli.losses import build_loss

C, D, B = 6, 8, 12


def unit(x, axis=-1):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-6)


def batch(seed=0, num_classes=C):
    rng = np.random.default_rng(seed)
    embeddings = unit(rng.normal(size=(B, D))).astype("float32")
    return embeddings, rng.integers(0, num_classes, B)


def softmax_ce(logits, labels):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def margin_ce(cosines, labels, scale, target_fn):
    """Cross-entropy of s·cos with the target column replaced by s·target_fn(cos θ_y)."""
    logits = scale * cosines.astype(np.float64)
    rows = np.arange(len(labels))
    logits[rows, labels] = scale * target_fn(cosines[rows, labels].astype(np.float64))
    return softmax_ce(logits, labels)


def cosines_of(layer, embeddings):
    kernel = layer.kernel.numpy()
    return unit(embeddings) @ unit(kernel, axis=0)


def arcface_target(m):
    def target(cos):
        theta = np.arccos(np.clip(cos, -1, 1))
        return np.where(theta + m <= math.pi, np.cos(theta + m), cos - m * math.sin(m))

    return target


MARGIN_CASES = {
    "normface": lambda layer: lambda cos: cos,
    "cosface": lambda layer: lambda cos: cos - 0.35,
    "amsoftmax": lambda layer: lambda cos: cos - 0.1,
    "arcface": lambda layer: arcface_target(0.5),
    "angular-margin": lambda layer: arcface_target(0.5),
    "combined-margin": lambda layer: lambda cos: np.cos(np.arccos(cos) + 0.3) - 0.2,
}


@pytest.mark.parametrize("name", sorted(MARGIN_CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_margin_heads_match_numpy(name, seed):
    embeddings, labels = batch(seed)
    layer = build_loss(name, C, D)
    expected = margin_ce(cosines_of(layer, embeddings), labels, layer.scale, MARGIN_CASES[name](layer))
    assert float(layer(embeddings, labels)) == pytest.approx(expected, rel=1e-4, abs=1e-4)
    np.testing.assert_allclose(layer.logits(embeddings), cosines_of(layer, embeddings), atol=1e-5)


def test_registry_defaults_are_the_documented_ones():
    assert build_loss("arcface", C, D).scale == 64.0
    assert build_loss("angular-margin", C, D).scale == 60.0
    amsoftmax = build_loss("amsoftmax", C, D)
    assert (amsoftmax.scale, amsoftmax.margin_value) == (30.0, 0.1)
    assert build_loss("l2-softmax", C, D).alpha == 30.0


def test_arcface_fallback_past_pi_and_easy_margin():
    layer = build_loss("arcface", 2, 2, margin=0.5)
    # θ_y = 170° so θ + m > π: target continues as cos θ − m sin m.
    theta = math.radians(170)
    cos = np.array([[math.cos(theta)]], dtype="float32")
    assert float(layer.margin(cos)[0, 0]) == pytest.approx(math.cos(theta) - 0.5 * math.sin(0.5), abs=1e-5)
    easy = build_loss("arcface", 2, 2, easy_margin=True)
    values = np.array([[-0.3], [0.6]], dtype="float32")
    expected = [-0.3, math.cos(math.acos(0.6) + 0.5)]
    np.testing.assert_allclose(np.asarray(easy.margin(values))[:, 0], expected, atol=1e-5)


def test_combined_margin_covers_sphereface_and_stays_monotone():
    sphere = build_loss("combined-margin", 2, 2, m1=4.0, m2=0.0, m3=0.0)
    thetas = np.linspace(0.01, math.pi - 0.01, 400)
    values = np.asarray(sphere.margin(np.cos(thetas)[:, None].astype("float32")))[:, 0]
    k = np.floor(4 * thetas / math.pi)
    psi = (-1) ** k * np.cos(4 * thetas) - 2 * k  # SphereFace's ψ(θ)
    np.testing.assert_allclose(values, psi, atol=2e-4)
    assert np.all(np.diff(values) < 1e-6)
    cosface_like = build_loss("combined-margin", 2, 2, m1=1.0, m2=0.0, m3=0.35)
    np.testing.assert_allclose(cosface_like.margin(np.array([[0.4]], "float32")), [[0.05]], atol=1e-5)


def test_softmax_and_l2_softmax_match_numpy():
    embeddings, labels = batch(2)
    for name, features in [("softmax", embeddings), ("l2-softmax", 30.0 * unit(embeddings))]:
        layer = build_loss(name, C, D)
        layer.bias.assign(np.linspace(-1, 1, C).astype("float32"))
        logits = features @ layer.kernel.numpy() + layer.bias.numpy()
        assert float(layer(embeddings, labels)) == pytest.approx(softmax_ce(logits, labels), rel=1e-5)
        np.testing.assert_allclose(layer.logits(embeddings), logits, rtol=1e-4, atol=1e-4)


def test_subcenter_arcface_takes_nearest_subcenter():
    embeddings, labels = batch(3)
    layer = build_loss("subcenter-arcface", C, D, sub_centers=3)
    assert tuple(layer.kernel.shape) == (D, C * 3)
    per_center = unit(embeddings) @ unit(layer.kernel.numpy(), axis=0)
    cosines = per_center.reshape(B, C, 3).max(axis=2)
    expected = margin_ce(cosines, labels, 64.0, arcface_target(0.5))
    assert float(layer(embeddings, labels)) == pytest.approx(expected, rel=1e-4)


def test_softmax_center_loss_and_update_match_wen_2016():
    embeddings, labels = batch(4)
    layer = build_loss("softmax-center-wen", C, D, center_weight=0.5, center_rate=0.5)
    centers = np.random.default_rng(5).normal(size=(C, D)).astype("float32")
    layer.centers.assign(centers)
    logits = embeddings @ layer.kernel.numpy() + layer.bias.numpy()
    center_term = 0.5 * np.mean(np.sum((embeddings - centers[labels]) ** 2, axis=1))
    expected = softmax_ce(logits, labels) + 0.5 * center_term
    assert float(layer(embeddings, labels)) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(layer.centers.numpy(), centers)  # no update outside training
    assert float(layer(embeddings, labels, training=True)) == pytest.approx(expected, rel=1e-5)
    updated = centers.copy()
    for j in range(C):
        members = labels == j
        delta = np.sum(centers[j] - embeddings[members], axis=0) / (1 + members.sum())
        updated[j] = centers[j] - 0.5 * delta
    np.testing.assert_allclose(layer.centers.numpy(), updated, atol=1e-6)


def test_groupface_matches_numpy():
    embeddings, labels = batch(6)
    layer = build_loss("groupface", C, D, groups=4, gdn_units=5, group_weight=0.1)
    head = layer.head
    w_g, b_g = (v.numpy() for v in head.group_projection.weights)
    w_h, b_h = (v.numpy() for v in head.decision_hidden.weights)
    w_o, b_o = (v.numpy() for v in head.decision_logits.weights)
    b_g += 0.1  # non-zero biases so every term is exercised
    head.group_projection.weights[1].assign(b_g)
    hidden = np.maximum(embeddings @ w_h + b_h, 0)
    scores = hidden @ w_o + b_o
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    groups = (embeddings @ w_g + b_g).reshape(B, 4, D)
    represent = unit(embeddings + np.einsum("bg,bgd->bd", probs, groups))
    cosines = represent @ unit(layer.arcface.kernel.numpy(), axis=0)
    arc = margin_ce(cosines, labels, 60.0, arcface_target(0.5))
    pseudo = np.argmax((probs - probs.mean(0)) / 4 + 1 / 4, axis=1)
    grouping = -np.mean(np.log(probs[np.arange(B), pseudo]))
    assert float(layer(embeddings, labels)) == pytest.approx(arc + 0.1 * grouping, rel=1e-4)
    np.testing.assert_allclose(unit(np.asarray(head(embeddings))), represent, atol=1e-5)


@pytest.mark.parametrize("name", ["arcface", "cosface", "softmax", "l2-softmax", "normface"])
def test_one_identity_batch_and_duplicates(name):
    """All-equal labels and duplicate embeddings give a finite, exact loss."""
    embeddings = np.repeat(batch(7)[0][:1], B, axis=0)
    labels = np.zeros(B, dtype="int64")
    layer = build_loss(name, C, D)
    value = float(layer(embeddings, labels))
    if name in MARGIN_CASES:
        expected = margin_ce(cosines_of(layer, embeddings), labels, layer.scale, MARGIN_CASES[name](layer))
        # float32 cross-entropy is log-sum-exp(s·cos) − s·cos_y with s·cos up to 64: when the
        # loss is near 0 (random weights can make it ~1e-4) the cancellation leaves ~64 ulp(1)
        # ≈ 8e-6 absolute error, so a relative bound alone is flaky there.
        assert value == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert np.isfinite(value)


def psi(t):
    """SphereFace's monotone continuation of cos t past π: (−1)^k cos t − 2k, k = floor(t/π)."""
    k = np.floor(t / math.pi)
    return (-1) ** k * np.cos(t) - 2 * k


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_margin_fraction_scales_every_margin(fraction):
    """Margin warm-up: ``margin_fraction=f`` is the same loss with m → f·m (m1 → 1 + f·(m1 − 1))."""
    embeddings, labels = batch(8)
    f = fraction
    cases = {
        "arcface": arcface_target(0.5 * f),
        "cosface": lambda cos: cos - 0.35 * f,
        "combined-margin": lambda cos: psi((1 + f) * np.arccos(cos) + 0.3 * f) - 0.2 * f,
    }
    for name, target in cases.items():
        options = {"m1": 2.0} if name == "combined-margin" else {}
        layer = build_loss(name, C, D, **options)
        expected = margin_ce(cosines_of(layer, embeddings), labels, layer.scale, target)
        value = float(layer(embeddings, labels, margin_fraction=np.float32(f)))
        assert value == pytest.approx(expected, rel=1e-4, abs=1e-4), name
    normface = build_loss("normface", C, D)
    assert not normface.warmable_margin and build_loss("arcface", C, D).warmable_margin
