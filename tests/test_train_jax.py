"""The trainer's training step on the JAX backend, with TensorFlow never imported.

``ffem train`` itself drives the step through ``tf.data`` and ``tf.distribute``,
but the step (``train.model.TrainingModel`` + ``build_optimizer`` + the
``WarmupDecay`` schedule, run by Keras's own ``train_on_batch``) is built
from backend-portable pieces; this runs it under ``KERAS_BACKEND=jax`` in a
fresh interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

JAX_STEP = textwrap.dedent(
    """
    import json, random, sys
    import numpy as np
    import keras
    from keras import ops
    from ffem_cli.losses import build_loss
    from ffem_cli.models import build_embedder
    from ffem_cli.train.model import TrainingModel, build_optimizer
    from ffem_cli.train.schedules import WarmupDecay

    assert keras.backend.backend() == "jax"
    random.seed(0)  # unseeded initializers draw from Python's random (keras.utils.set_random_seed imports TF)
    embedder = build_embedder("tiny", "gap", 32, 32)
    head = build_loss("arcface", 8, 32, scale=16.0, margin=0.2)
    head(ops.zeros((2, 32)), ops.zeros((2,), "int32"))  # its weights, as the trainer does
    model = TrainingModel(embedder, head)
    schedule = WarmupDecay(3e-3, total_steps=6, warmup_steps=1, decay="cosine")
    model.compile(optimizer=build_optimizer("adam", schedule), jit_compile=True)
    rng = np.random.default_rng(0)
    labels = np.arange(16, dtype="int32") % 8
    # each identity is a fixed random pattern plus a little noise: learnable in a few steps
    patterns = rng.uniform(0, 255, (8, 32, 32, 3))
    pixels = np.clip(patterns[labels] + rng.normal(0, 10, (16, 32, 32, 3)), 0, 255).astype("float32")
    history = [model.train_on_batch(pixels, labels, return_dict=True) for _ in range(6)]
    print(json.dumps({
        "losses": [float(h["loss"]) for h in history],
        "accuracy": float(history[-1]["accuracy"]),
        "iterations": int(model.optimizer.iterations),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }))
    """
)


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed in this environment (it is in the test extras)",
)
def test_training_step_runs_on_jax_without_tensorflow():
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO_ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", JAX_STEP],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    losses = report["losses"]
    assert all(value == value and abs(value) != float("inf") for value in losses), losses
    assert losses[-1] < 0.5 * losses[0], losses
    assert report["iterations"] == 6
    assert 0.0 <= report["accuracy"] <= 1.0
    assert report["tensorflow_imported"] is False
