"""A run checkpointed on N logical CPU devices resumes on M (2→1 and 1→2), global batch kept.

Each process configures two logical CPU devices before TensorFlow starts and
builds at most one MirroredStrategy (a second one in the same process can
reuse the first one's collective keys). Synchronised BatchNorm makes two
replicas train like one device, so the resumed loss curve continues the
uninterrupted one within float summation order ("BatchNorm noise").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib

import pytest
from train_fixtures import make_pack

SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ffem_cli.train import config as C
    from ffem_cli.train.trainer import train
    pack, run, before, after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    flags = dict(data=pack, backbone="tiny", embedding_size=32, batch_size=16, lr=0.003, epochs=3,
                 augment="off", devices=before, checkpoint_every=4)
    if before == after:
        train(C.resolve({}, flags), run, show_progress=False)
    else:
        halted = train(C.resolve({}, flags), run, halt_at_step=9, show_progress=False)
        assert halted.halted and halted.steps == 9
        result = train(C.for_run(run, True, None, {"devices": after}), run, resume=True, show_progress=False)
        assert result.steps == 18
    found = {}
    for events in sorted(__import__("pathlib").Path(run, "logs").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.tag == "train/loss":
                    found[event.step] = float(tf.make_ndarray(value.tensor))
    print(json.dumps([found[step] for step in sorted(found)]))
""")


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    return make_pack(tmp_path_factory.mktemp("resume_devices_pack"), seed=5)


def run_script(tmp_path, pack_dir, name, before, after) -> list[float]:
    """The per-step training losses (TensorBoard ``train/loss``) of the run, in step order."""
    script = tmp_path / "resume.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(script), str(pack_dir), str(tmp_path / name), str(before), str(after)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_step(means: list[float], starts: set[int]) -> list[float]:
    """Each step's own loss from Keras's running means (a fresh mean at each step of ``starts``)."""
    losses, count = [], 0
    for step, mean in enumerate(means, start=1):
        count = 1 if step in starts else count + 1
        losses.append(mean if count == 1 else count * mean - (count - 1) * means[step - 2])
    return losses


@pytest.fixture(scope="module")
def reference(pack_dir, tmp_path_factory):
    return run_script(tmp_path_factory.mktemp("alone"), pack_dir, "alone", 1, 1)


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_resume_on_another_device_count_continues_the_loss_curve(pack_dir, reference, tmp_path, before, after):
    resumed = run_script(tmp_path, pack_dir, "moved", before, after)
    # steps 1-9 ran on `before` devices; from the step-8 checkpoint (mid-epoch 2) on `after`
    assert len(resumed) == len(reference) == 18
    # the logged loss is the epoch's running mean; a resume mid-epoch restores the mean's state
    # from the checkpoint (issue 10, item 13), so both runs start a fresh mean at each epoch only
    resumed, reference = per_step(resumed, {1, 7, 13}), per_step(reference, {1, 7, 13})
    # (differences of running means amplify float summation order: ~1% at most here, 10% with the
    # data position off by the replica count)
    assert resumed == pytest.approx(reference, rel=3e-2)
    record = tomllib.loads((tmp_path / "moved" / "run.toml").read_text())
    assert len(record["provenance"]["devices"]) == before
    assert record["resumed"][-1]["replicas"] == after and record["resumed"][-1]["replicas_before"] == before
    assert record["resumed"][-1]["per_replica_batch"] == 16 // after


def test_resume_refuses_another_global_batch(pack_dir, tmp_path):
    from ffem_cli.errors import FfemError
    from ffem_cli.train import config as C
    from ffem_cli.train.trainer import train

    run = tmp_path / "run"
    flags = dict(data=str(pack_dir), backbone="tiny", embedding_size=32, batch_size=16, epochs=1, augment="off")
    train(C.resolve({}, flags), run, halt_at_step=1, show_progress=False)
    with pytest.raises(FfemError, match="global batch of 16; resume it with the same --batch-size"):
        train(C.for_run(run, True, None, {"batch_size": 8}), run, resume=True, show_progress=False)
