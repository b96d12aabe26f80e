"""build_embedder: the docs/architecture.md contract, every head, errors,
save/load round trips, mixed precision, and backend portability."""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from ffem_cli.errors import FfemError
from ffem_cli.models import BACKBONES, POOLINGS, NormAwareReweight, build_embedder, precision_policy
from ffem_cli.models.flops import iter_layers

MODELS_DIR = pathlib.Path(__file__).resolve().parents[1] / "ffem_cli" / "models"


def random_pixels(count: int = 4, size: int = 112, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def unit_norms(embeddings) -> np.ndarray:
    return np.linalg.norm(np.asarray(embeddings, dtype="float64"), axis=1)


@pytest.fixture(scope="module")
def mobilefacenet():
    return build_embedder()  # the defaults: mobilefacenet + gdc, 512-d, 112 px


def test_default_embedder_follows_the_contract(mobilefacenet):
    assert mobilefacenet.name == "embedder"
    assert mobilefacenet.inputs[0].dtype == "float32"
    assert tuple(mobilefacenet.inputs[0].shape) == (None, 112, 112, 3)
    assert mobilefacenet.layers[1].name == "normalize_pixels"
    embeddings = mobilefacenet(random_pixels(), training=False)
    assert tuple(embeddings.shape) == (4, 512)
    assert keras.backend.standardize_dtype(embeddings.dtype) == "float32"
    np.testing.assert_allclose(unit_norms(embeddings), 1.0, atol=1e-5)


def test_pooling_none_takes_the_backbones_published_head():
    names = [layer.name for layer in build_embedder("iresnet18", None, 64).layers]
    assert "flatten_fc_fc" in names and "gdc_fc" not in names


def test_first_layer_maps_pixels_to_centred_range(mobilefacenet):
    normalize = mobilefacenet.get_layer("normalize_pixels")
    values = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")
    np.testing.assert_allclose(np.asarray(normalize(values)), [[[[-127.5 / 128, 0.0, 127.5 / 128]]]], atol=1e-7)


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
@pytest.mark.parametrize("embedding_size", [64, 128, 256])
def test_every_head_gives_unit_float32_embeddings(pooling, embedding_size):
    # tiny ends in 128 channels: 64 / 128 / 256 cover GNAP's narrowing, equal and
    # widening branches.
    model = build_embedder("tiny", pooling, embedding_size=embedding_size)
    embeddings = model(random_pixels(3), training=False)
    assert tuple(embeddings.shape) == (3, embedding_size)
    assert keras.backend.standardize_dtype(embeddings.dtype) == "float32"
    np.testing.assert_allclose(unit_norms(embeddings), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("backbone", "input_size"),
    [("mobilefacenet", 96), ("mobilefacenet", 128), ("iresnet18", 96), ("thin-resnet34", 120)],
)
def test_backbones_accept_sizes_other_than_112(backbone, input_size):
    model = build_embedder(backbone, BACKBONES[backbone].default_pooling, 128, input_size)
    embeddings = model(random_pixels(2, input_size), training=False)
    assert tuple(embeddings.shape) == (2, 128)
    np.testing.assert_allclose(unit_norms(embeddings), 1.0, atol=1e-5)


@pytest.mark.parametrize("backbone", ["mobilenetv3-small", "resnet50"])
def test_keras_applications_backbones_build_without_download(backbone):
    model = build_embedder(backbone, BACKBONES[backbone].default_pooling, 128)
    embeddings = model(random_pixels(2), training=False)
    np.testing.assert_allclose(unit_norms(embeddings), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"backbone": "resnet9"},
            "unknown backbone 'resnet9'; choose one of: " + ", ".join(BACKBONES),
        ),
        ({"pooling": "max"}, "unknown pooling 'max'; choose one of: gap, gnap, gdc, flatten-fc"),
        (
            {"input_size": 64},
            "input size 64 is too small for backbone 'mobilefacenet' (at least 96 pixels)",
        ),
        ({"embedding_size": 0}, "embedding size must be a positive integer, got 0"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
    ],
)
def test_bad_arguments_raise_one_line_errors(arguments, message):
    with pytest.raises(FfemError) as caught:
        build_embedder(**arguments)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("pooling", "embedding_size"),
    [(name, 32) for name in sorted(POOLINGS)] + [("gnap", 128), ("gnap", 256)],
)
def test_dropout_is_active_only_in_training(pooling, embedding_size):
    model = build_embedder("tiny", pooling, embedding_size=embedding_size, dropout=0.5)
    assert any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    pixels = random_pixels(4)
    inference = [np.asarray(model(pixels, training=False)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    assert not np.allclose(np.asarray(model(pixels, training=True)), inference[0])


def test_norm_aware_reweight_matches_numpy():
    features = np.random.default_rng(3).normal(size=(2, 3, 4, 5)).astype("float32")
    features[0, 1, 2] = 0.0  # an all-zero position stays zero
    layer = NormAwareReweight(epsilon=1e-6)
    norms = np.sqrt((features.astype("float64") ** 2).sum(-1, keepdims=True) + 1e-6)
    expected = features * norms.mean(axis=(1, 2), keepdims=True) / norms
    np.testing.assert_allclose(np.asarray(layer(features)), expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(layer(features))[0, 1, 2] == 0.0)
    # After reweighting every position of an image has the image's mean norm (up to ε).
    reweighted = np.asarray(layer(features))[1]
    position_norms = np.linalg.norm(reweighted, axis=-1)
    np.testing.assert_allclose(position_norms, norms[1].mean(), rtol=1e-4)
    assert NormAwareReweight.from_config(layer.get_config()).epsilon == 1e-6


def test_gnap_weights_do_not_depend_on_the_rest_of_the_batch():
    model = build_embedder("tiny", "gnap", embedding_size=32)
    pixels = random_pixels(4)
    together = np.asarray(model(pixels, training=False))
    alone = np.asarray(model(pixels[:1], training=False))
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_training_step_on_identical_images_stays_finite(pooling):
    # Identical images make every BN output its bias (0): zero features, zero
    # GNAP norms and a zero embedding before the L2 normalisation.
    pixels = np.full((4, 64, 64, 3), 100.0, dtype="float32")
    model = build_embedder("tiny", pooling, embedding_size=16, input_size=64)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.asarray(w).copy() for w in model.trainable_weights]
    loss = model.train_on_batch(pixels, np.full((4, 16), 0.25, dtype="float32"))
    assert np.isfinite(loss)
    after = [np.asarray(w) for w in model.trainable_weights]
    assert all(np.all(np.isfinite(w)) for w in after)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize(
    ("backbone", "pooling"),
    [
        ("tiny", "gap"),
        ("tiny", "gnap"),
        ("tiny", "gdc"),
        ("tiny", "flatten-fc"),
        ("mobilefacenet", "gdc"),
    ],
)
def test_save_and_load_give_identical_outputs(tmp_path, backbone, pooling):
    model = build_embedder(backbone, pooling, embedding_size=64, dropout=0.1)
    # One training step so BN statistics and weights are no longer their initial values.
    model.compile(optimizer="sgd", loss="mse")
    model.train_on_batch(random_pixels(4, seed=1), np.zeros((4, 64), dtype="float32"))
    path = tmp_path / "embedder.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == "embedder"
    pixels = random_pixels(3, seed=2)
    np.testing.assert_array_equal(np.asarray(loaded(pixels, training=False)), np.asarray(model(pixels, training=False)))


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def mixed_policy(request):
    with precision_policy(request.param):
        yield request.param


@pytest.mark.parametrize(
    ("backbone", "pooling"),
    [("tiny", "gnap"), ("mobilefacenet", "gdc"), ("mobilenetv3-small", "flatten-fc")],
)
def test_mixed_precision_embedding_is_float32_and_unit(mixed_policy, backbone, pooling):
    model = build_embedder(backbone, pooling, embedding_size=128)
    compute_dtype = mixed_policy.removeprefix("mixed_")
    convs = [layer for layer in iter_layers(model) if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == compute_dtype for layer in convs)
    # Batch statistics: with a fresh model's moving statistics the deep float16
    # activations underflow to 0 (an untrained-BN artefact, not a precision bug).
    embeddings = model(random_pixels(4), training=True)
    assert keras.backend.standardize_dtype(embeddings.dtype) == "float32"
    np.testing.assert_allclose(unit_norms(embeddings), 1.0, atol=1e-5)


def test_mixed_precision_training_step_is_finite(mixed_policy):
    model = build_embedder("tiny", "gnap", embedding_size=32, input_size=64)
    model.compile(optimizer="sgd", loss="mse")
    loss = model.train_on_batch(random_pixels(4, 64), np.zeros((4, 32), dtype="float32"))
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(np.asarray(w))) for w in model.trainable_weights)


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_model_code_never_imports_tensorflow():
    sources = sorted(MODELS_DIR.glob("*.py"))
    assert len(sources) >= 8
    offenders = [p.name for p in sources if imported_modules(p) & {"tensorflow", "tf_keras"}]
    assert offenders == []


JAX_FORWARD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from ffem_cli.models import build_embedder
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 112, 112, 3)).astype("float32")
    for backbone, pooling in [("tiny", "gnap"), ("mobilefacenet", "gdc")]:
        out = np.asarray(build_embedder(backbone, pooling, 128).predict_on_batch(pixels))
        assert out.shape == (2, 128) and out.dtype == np.float32, (out.shape, out.dtype)
        assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert "tensorflow" not in sys.modules, "tensorflow was imported"
    print("ok")
    """
)


def jax_interpreter() -> str | None:
    """A Python that has jax and keras: $FFEM_JAX_PYTHON, else this one if it has jax."""
    if os.environ.get("FFEM_JAX_PYTHON"):
        return os.environ["FFEM_JAX_PYTHON"]
    return sys.executable if importlib.util.find_spec("jax") is not None else None


@pytest.mark.slow  # ~25 s: building layer by layer under JAX traces every layer
@pytest.mark.skipif(
    jax_interpreter() is None,
    reason="jax is not installed here (the project venv ships TensorFlow only); "
    "set FFEM_JAX_PYTHON to a Python with jax + keras to run this",
)
def test_embedder_runs_on_the_jax_backend():
    repo_root = str(MODELS_DIR.parents[1])
    environment = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": repo_root}
    result = subprocess.run(
        [jax_interpreter(), "-c", JAX_FORWARD],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo_root,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_layer_names_do_not_depend_on_what_was_built_before():
    # Checkpoints and saved weights are keyed on layer names: a second build in
    # the same process must name its layers exactly like the first.
    first = [layer.name for layer in build_embedder("mobilefacenet", "gnap", 64).layers]
    build_embedder("tiny", "gap", 64)
    second = [layer.name for layer in build_embedder("mobilefacenet", "gnap", 64).layers]
    assert first == second
    assert len(set(first)) == len(first)


@pytest.mark.parametrize("backbone", ["tiny", "mobilenetv3-small"])
def test_every_batchnorm_uses_insightface_momentum_and_keeps_it_through_save(backbone, tmp_path):
    from ffem_cli.models.embedder import BN_MOMENTUM

    def momenta(model):
        return [layer.momentum for layer in iter_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]

    model = build_embedder(backbone, "gdc", embedding_size=16, input_size=112 if backbone != "tiny" else 64)
    assert momenta(model) and set(momenta(model)) == {BN_MOMENTUM}
    model.save(tmp_path / "m.keras")
    assert set(momenta(keras.models.load_model(tmp_path / "m.keras"))) == {BN_MOMENTUM}
