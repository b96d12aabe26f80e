"""``--grad-accum N``: N batches of B with accumulation train exactly like one batch of N·B.

The model has no BatchNorm (its statistics would differ between B and N·B),
so the only difference is float summation order. The same script runs on
TensorFlow, on TensorFlow with two logical CPU replicas (MirroredStrategy),
and on JAX, each in a fresh interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import make_pack

from ffem_cli.train import config as C
from ffem_cli.train.trainer import train

REPO_ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import keras
    devices = int(sys.argv[1])
    if devices > 1:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
        scope = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)]).scope
    else:
        import contextlib
        scope = contextlib.nullcontext
    from keras import ops
    from ffem_cli.losses import build_loss
    from ffem_cli.train.model import TrainingModel, build_optimizer

    def build(accum):
        embedder = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 128, -1.0),
                                     keras.layers.Flatten(), keras.layers.Dense(32, activation="tanh"),
                                     keras.layers.Dense(16), keras.layers.UnitNormalization()], name="embedder")
        head = build_loss("arcface", 8, 16, scale=16.0, margin=0.2)
        head(ops.zeros((2, 16)), ops.zeros((2,), "int32"))
        model = TrainingModel(embedder, head, track_accuracy=False)
        model.compile(optimizer=build_optimizer("sgd", 0.05, momentum=0.9, grad_accum=accum))
        return model

    rng = np.random.default_rng(0)
    labels = (np.arange(64) % 8).astype("int32")
    pixels = rng.uniform(0, 255, (64, 16, 16, 3)).astype("float32")
    with scope():
        big, small = build(1), build(4)
    small.set_weights(big.get_weights())
    big.fit(pixels, labels, batch_size=32, epochs=1, shuffle=False, verbose=0)   # 2 updates of 32
    small.fit(pixels, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)  # 8 batches, 2 updates
    start = build(1)
    print(json.dumps({
        "max_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(big.get_weights(), small.get_weights())),
        "max_change": max(float(np.max(np.abs(a - b))) for a, b in zip(big.get_weights(), start.get_weights())),
        "iterations": [int(ops.convert_to_numpy(ops.convert_to_tensor(m.optimizer.iterations))) for m in (big, small)],
    }))
    """
)


def _run(backend: str, devices: int) -> dict:
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": str(REPO_ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(devices)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(report: dict) -> None:
    assert report["iterations"] == [2, 2]  # the schedule sees updates, not batches
    assert report["max_change"] > 1e-3  # the weights did move
    assert report["max_difference"] < 1e-5


def test_accumulating_four_batches_equals_a_four_times_larger_batch():
    _check(_run("tensorflow", 1))


def test_accumulation_under_two_mirrored_replicas():
    _check(_run("tensorflow", 2))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (it is in the test extras)")
def test_accumulation_on_jax():
    _check(_run("jax", 1))


def test_trainer_counts_updates_and_resumes_mid_accumulation(tmp_path):
    """``ffem train --grad-accum 2``: the LR schedule runs on updates; a stop between the two
    batches of an update resumes to the same weights as an uninterrupted run."""
    pack_dir = make_pack(tmp_path, identities=4, images_per_identity=8)
    flags = dict(
        data=str(pack_dir),
        backbone="tiny",
        embedding_size=16,
        batch_size=8,
        lr=0.01,
        epochs=2,
        augment="off",
        grad_accum=2,
        schedule="cosine",
        checkpoint_every=3,
    )
    whole = train(C.resolve({}, flags), tmp_path / "whole", show_progress=False)
    halted = train(C.resolve({}, flags), tmp_path / "halted", show_progress=False, halt_at_step=3)
    assert halted.halted and whole.steps == 8
    resumed = train(C.resolve({}, flags), tmp_path / "halted", show_progress=False)
    assert resumed.steps == 8
    import keras

    a = keras.models.load_model(tmp_path / "whole" / "embedder.keras")
    b = keras.models.load_model(tmp_path / "halted" / "embedder.keras")
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)  # cosine reached its end after 4 updates, not 8
