"""``ffem train`` on Keras's JAX backend, with the head's class weights sharded over devices.

Two host CPU devices stand in for GPUs (``XLA_FLAGS=--xla_force_host_platform_device_count``,
set before JAX starts, so every check runs in a fresh interpreter).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from train_fixtures import make_pack

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed (it is in the test extras)"
)


def _env(devices: int) -> dict:
    return {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": str(REPO_ROOT),
    }


TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    from ffem_cli.train import config as C
    from ffem_cli.train.trainer import train

    pack, out = sys.argv[1], sys.argv[2]

    def run(devices, folder, **kwargs):
        flags = dict(data=pack, stage="metric", loss="arcface", backbone="tiny", embedding_size=32, epochs=2,
                     batch_size=16, devices=devices, sample_rate=0.5, augment="off", checkpoint_every=1)
        train(C.resolve({}, flags), f"{out}/{folder}", show_progress=False, **kwargs)

    run(1, "whole")
    run(1, "moved", halt_at_step=2)
    run(2, "moved", resume=True, halt_at_step=5)  # sharded from step 3, into epoch 2
    run(1, "moved", resume=True)
    """
)


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_partial_fc_sharded_over_two_jax_devices_trains_like_one_device_and_resumes_across_counts(tmp_path):
    """Steps 3-5 of a run are trained with the centres split over 2 JAX devices: the run resumes from
    1 device onto 2 and back, and ends with the losses of a run on 1 device throughout."""
    pack = make_pack(tmp_path, identities=8, images_per_identity=6, image_size=32)
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_SCRIPT, str(pack), str(tmp_path)],
        env=_env(2),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("sharded by class") == 1  # the 2-device start only
    assert "sharded by class: class_head/centres (8, 32): (4, 32) on each of 2 devices" in done.stderr
    whole, moved = _losses(tmp_path / "whole"), _losses(tmp_path / "moved")
    assert len(whole) == len(moved) == 2 and whole[1] < 0.9 * whole[0]  # it trains
    assert moved == pytest.approx(whole, rel=1e-5)  # same batches, same sampled classes
    record = tomllib.loads((tmp_path / "moved" / "run.toml").read_text())
    assert [start["devices"] for start in record["resumed"]] == [["cpu:0", "cpu:1"], ["cpu:0"]]
    assert [start["replicas_before"] for start in record["resumed"]] == [1, 2]


LAYOUT_SCRIPT = textwrap.dedent(
    """
    import jax
    from keras import ops
    from ffem_cli.errors import FfemError
    from ffem_cli.losses import build_loss
    from ffem_cli.train.strategy import HEAD_NAME, JaxDevices

    try:
        JaxDevices.choose(4, ())
    except FfemError as exc:
        print(exc)
    mesh = JaxDevices.choose(3, ())
    for loss, classes in (("arcface", 9), ("softmax", 6), ("arcface", 8)):
        head = build_loss(loss, classes, 4, name=HEAD_NAME)
        head(ops.zeros((3, 4)), ops.zeros((3,), "int32"))
        print("\\n".join(mesh.sharding_lines(head.weights)))
    """
)


def test_class_weights_split_by_class_or_stay_whole_when_the_classes_do_not_divide():
    done = subprocess.run(
        [sys.executable, "-c", LAYOUT_SCRIPT], env=_env(3), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("--devices 4 asked for, but only 3 JAX CPU device(s) are visible")
    assert lines[1:] == [
        "class_head/kernel (4, 9): (4, 3) on each of 3 devices",
        "class_head/kernel (4, 6): (4, 2) on each of 3 devices",
        "class_head/bias (6,): (2,) on each of 3 devices",
        "class_head/kernel (4, 8): whole on each of the 3 devices (8 classes do not divide by 3)",
    ]
