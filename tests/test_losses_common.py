"""Every loss: finite gradients at the edges in float32/16/bf16, configs, save/load, registry."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from ffem_cli.errors import FfemError
from ffem_cli.losses import LOSSES, MINERS, build_loss, build_miner

C, D = 4, 8
SMALL = {
    "groupface": {"groups": 4, "gdn_units": 6},
    "softtriple": {"centers_per_class": 3},
    # a seeded draw, so that a clone from the config draws the same negatives
    "ee488b-triplet": {"miner": keras.saving.serialize_keras_object(MINERS["random-negative"].build(seed=1))},
}


def make(name, **options):
    return build_loss(name, C, D, **{**SMALL.get(name, {}), **options})


def edge_batch(layer):
    """Rows at cos θ = 1 and −1 to a class weight, exact duplicates, and a zero-norm row."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, D)).astype("float32")
    weights = getattr(layer, "kernel", None)
    weights = getattr(layer, "proxies", weights)
    if weights is None and hasattr(layer, "arcface"):
        weights = layer.arcface.kernel
    if weights is not None:
        w = np.asarray(weights)[:, 0]
        x[0], x[1] = w, -w
    x[3] = x[2]
    x[4] = 0.0
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x, np.array([0, 1, 0, 0, 1, 2, 2, 3])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_finite_at_edges(name, dtype):
    layer = make(name)
    x, y = edge_batch(layer)
    embeddings = tf.Variable(tf.cast(x, dtype))
    with tf.GradientTape() as tape:
        value = layer(embeddings, y)
    grads = tape.gradient(value, [embeddings, *layer.trainable_variables])
    assert value.dtype == tf.float32 and value.shape == ()
    assert np.isfinite(float(value))
    for grad in grads:
        if grad is not None:
            assert np.all(np.isfinite(tf.cast(tf.convert_to_tensor(grad), tf.float32).numpy()))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_get_config_round_trip(name):
    layer = make(name)
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.set_weights(layer.get_weights())
    x, y = edge_batch(layer)
    np.testing.assert_allclose(float(clone(x, y)), float(layer(x, y)), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(MINERS))
def test_miner_config_round_trip(name):
    miner = build_miner(name)
    assert miner.__class__.from_config(miner.get_config()).get_config() == miner.get_config()


@pytest.mark.parametrize(
    "name",
    [
        "arcface",
        "subcenter-arcface",
        "softmax-center",
        "groupface",
        "softtriple",
        "proxy-anchor",
        "triplet",
        "multi-similarity",
    ],
)
def test_model_with_loss_survives_save_and_load(name, tmp_path):
    options = {"miner": "batch-semi-hard"} if name == "triplet" else {}
    layer = make(name, **options)
    embeddings = keras.Input((D,), name="embeddings")
    labels = keras.Input((), dtype="int32", name="labels")
    model = keras.Model([embeddings, labels], layer(embeddings, labels))
    x, y = edge_batch(layer)
    before = model.predict([x, y], verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict([x, y], verbose=0), before, rtol=1e-6)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert type(loaded.layers[-1]) is type(layer)


def test_registry_rows_are_complete():
    for name, entry in LOSSES.items():
        assert entry.family in {"classification", "pair", "proxy"}, name
        assert entry.paper
        layer = build_loss(name, C, D)
        assert hasattr(layer, "logits") == (entry.family != "pair"), name


def test_loss_options_are_the_class_signature_with_the_entry_overrides():
    assert LOSSES["amsoftmax"].defaults == {"scale": 30.0, "margin": 0.1}  # CosFace's 64 / 0.35 overridden
    assert LOSSES["subcenter-arcface"].defaults == {"scale": 64.0, "margin": 0.5, "sub_centers": 3}
    layer = build_loss("ee488b-triplet", C, D, seed=3, max_triplets=2)
    assert (layer.seed, layer.max_triplets, layer.margin) == (3, 2, 0.1)
    with pytest.raises(FfemError, match=r"^loss 'triplet' option 'seed' must be an integer, got 'x'$"):
        build_loss("triplet", C, D, seed="x")


def test_bad_names_and_options_are_one_line_errors():
    with pytest.raises(FfemError, match=r"^unknown loss 'arcfce'; choose one of: softmax, "):
        build_loss("arcfce", C, D)
    with pytest.raises(FfemError) as error:
        build_loss("arcface", C, D, margn=0.3)
    assert str(error.value) == (
        "loss 'arcface' has no option 'margn' (options: easy_margin, margin, sample_rate, scale)"
    )
    with pytest.raises(FfemError, match=r"^unknown miner 'hard'; choose one of: batch-all, "):
        build_loss("triplet", C, D, miner="hard")
    with pytest.raises(FfemError, match=r"^unknown distance 'l1'; choose one of: "):
        build_loss("triplet", C, D, distance="l1")
    with pytest.raises(FfemError, match=r"^proxy-nca needs at least 2 classes, got 1$"):
        build_loss("proxy-nca", 1, D)


def test_no_tensorflow_import_inside_losses():
    root = os.path.join(os.path.dirname(__file__), "..", "ffem_cli", "losses")
    for file in os.listdir(root):
        if file.endswith(".py"):
            with open(os.path.join(root, file)) as handle:
                source = handle.read()
            assert "import tensorflow" not in source and "tf." not in source, file


JAX_SCRIPT = """
import jax, numpy as np, keras
from ffem_cli.losses import LOSSES, build_loss
assert keras.backend.backend() == "jax"
x = np.random.default_rng(0).normal(size=(8, 8)).astype("float32")
x /= np.linalg.norm(x, axis=1, keepdims=True)
y = np.array([0, 1, 0, 0, 1, 2, 2, 3])
for name in LOSSES:
    options = {"groups": 4} if name == "groupface" else {}
    layer = build_loss(name, 4, 8, **options)
    value, grad = jax.jit(jax.value_and_grad(lambda e: layer(e, y)))(x)
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad)), name
print("ok", len(LOSSES))
"""


@pytest.mark.slow
def test_every_loss_runs_on_the_jax_backend():
    """Value and gradient of every loss under ``jax.jit`` with KERAS_BACKEND=jax."""
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.join(os.path.dirname(__file__), ".."),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"ok {len(LOSSES)}"
