"""``ffem train`` as two local workers (``TF_CONFIG``, MultiWorkerMirroredStrategy over loopback).

Both workers run the same command with the same ``--run``; worker 0 (the
chief) writes the run directory, worker 1 trains into a scratch folder that
it deletes. The loss curve is compared with one process training alone:

- epochs 1–2 train the ArcFace head only (``--freeze-backbone-epochs 2``).
  The head's gradient is the mean over the same global batch of 16 whether
  one process computes it or two workers compute 8 each and all-reduce, so
  the per-step losses agree to float32 summation order (rel 1e-5).
- epoch 3 trains the whole model: synchronised BatchNorm (the default with
  several replicas) normalises with the global batch's statistics, so that
  epoch agrees too, to the float summation order that grows over its steps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from train_fixtures import cli_flags, make_pack

from ffem_cli.train import config as C
from ffem_cli.train.trainer import train

FLAGS = cli_flags(
    backbone="tiny", embedding_size=32, batch_size=16, lr=0.003, epochs=3, freeze_backbone_epochs=2, augment="off",
    checkpoint_every=100,
)  # fmt: skip


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    return make_pack(tmp_path_factory.mktemp("multiworker_pack"), seed=5)


def free_ports(count: int) -> list[int]:
    """Ports the OS has just handed out on 127.0.0.1 (held together, so all differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def step_losses(run) -> list[float]:
    """The ``train/loss`` TensorBoard scalar of every step, in step order."""
    import tensorflow as tf

    found = {}
    for events in sorted((run / "logs").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.tag == "train/loss":
                    found[event.step] = float(tf.make_ndarray(value.tensor))
    return [found[step] for step in sorted(found)]


@pytest.mark.timeout(180)
def test_two_workers_on_loopback_follow_the_single_process_loss_curve(pack_dir, tmp_path):
    run = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = start_workers(pack_dir, run, tmp_path, cluster, FLAGS, "")
    outputs = finish(workers, timeout=150)
    # rich wraps the summary where the temporary path's length puts it: compare without whitespace
    assert f"{run}:3epochs,18steps" in "".join(outputs[0][0].split())

    # the chief wrote the run; the other worker's scratch run directory is gone
    assert (run / "run.toml").is_file() and (run / "embedder.keras").is_file()
    assert "/job:worker/replica:0/task:0/device:CPU:0" in (run / "run.toml").read_text()
    assert list((tmp_path / "scratch-1").iterdir()) == []
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [6, 12, 18]

    alone = tmp_path / "alone"
    flags = dict(
        data=str(pack_dir),
        backbone="tiny",
        embedding_size=32,
        batch_size=16,
        lr=0.003,
        epochs=3,
        freeze_backbone_epochs=2,
        augment="off",
        checkpoint_every=100,
    )
    train(C.resolve({}, flags), alone, show_progress=False)
    single = [json.loads(line) for line in (alone / "metrics.jsonl").read_text().splitlines()]

    two, one = step_losses(run), step_losses(alone)
    assert len(two) == len(one) == 18
    np.testing.assert_allclose(two[:12], one[:12], rtol=1e-5)  # head only: the same global batches
    for mine, reference in zip(records[:2], single[:2], strict=True):
        assert mine["loss"] == pytest.approx(reference["loss"], rel=1e-5)
        assert mine["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-6)
    # whole model: BatchNorm statistics all-reduced over the workers, as on one process
    assert np.isfinite(two[12:]).all()
    assert records[2]["loss"] == pytest.approx(single[2]["loss"], rel=1e-2)


def start_workers(pack_dir, run, tmp_path, cluster, flags, tag, indexes=(0, 1)):
    workers = []
    for index in indexes:
        scratch = tmp_path / f"scratch-{tag}{index}"
        scratch.mkdir()
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": "",
            "TMPDIR": str(scratch),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        command = [
            sys.executable,
            "-c",
            "from ffem_cli.cli import main; main()",
            "train",
            "--data",
            str(pack_dir),
            "--run",
            str(run),
            *flags,
        ]
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return workers


def finish(workers, timeout: float) -> list[tuple[str, str]]:
    """Each worker's (stdout, stderr) once it exits within ``timeout`` s; every one must exit with 0.
    Workers still running after that are killed."""
    try:
        outputs = [worker.communicate(timeout=timeout) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    return outputs


#: ``FLAGS`` with a checkpoint every 4 steps, so that one falls inside an epoch (6 steps).
RESUME_FLAGS = [*FLAGS[: FLAGS.index("--checkpoint-every")], "--checkpoint-every", "4"]


def newest_step(run) -> int:
    from ffem_cli.train import checkpoint

    kept = checkpoint.list_checkpoints(run / "checkpoints")
    return int(kept[-1].name[5:14]) if kept else 0


def kill_worker_1_mid_epoch(workers, run) -> int:
    """SIGKILL worker 1 once the chief has written a checkpoint; the newest checkpoint's step (mid-epoch)."""
    import time

    deadline = time.time() + 240
    while time.time() < deadline and not newest_step(run):
        time.sleep(0.05)
    assert workers[1].poll() is None, "training ended before a worker could be killed"
    workers[1].kill()
    workers[1].wait(timeout=30)
    step = newest_step(run)
    assert 0 < step < 18 and step % 6 and not (run / "embedder.keras").exists()  # mid-epoch, unfinished
    return step


@pytest.mark.timeout(600)
def test_a_killed_worker_restarted_with_the_job_resumes_from_the_shared_checkpoint(pack_dir, tmp_path):
    """Worker 1 is killed mid-epoch; the job (both workers) is started again with the same command:
    both restore the chief's newest checkpoint from the shared run directory and finish together."""
    run = tmp_path / "run"
    workers = start_workers(
        pack_dir, run, tmp_path, {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}, RESUME_FLAGS, "a"
    )
    try:
        step = kill_worker_1_mid_epoch(workers, run)
        try:  # the chief starts itself again to wait for worker 1 (``rejoin``): stop it, end the whole job
            workers[0].wait(timeout=20)
        except subprocess.TimeoutExpired:
            workers[0].kill()
            workers[0].wait(timeout=30)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert newest_step(run) == step

    workers = start_workers(
        pack_dir, run, tmp_path, {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}, RESUME_FLAGS, "b"
    )
    outputs = finish(workers, timeout=300)
    for _, stderr in outputs:
        assert f"resuming at step {step}" in " ".join(stderr.split())
    assert "3 epochs, 18 steps" in " ".join(outputs[0][0].split())  # rich wraps long lines
    assert (run / "embedder.keras").is_file()


@pytest.mark.timeout(600)
def test_a_killed_worker_started_again_alone_rejoins_the_running_job(pack_dir, tmp_path, monkeypatch):
    """Worker 1 is killed mid-epoch and started again by itself; worker 0 is left running. Its health
    check aborts the lost collective, it starts itself again (``strategy.rejoin``), and both resume
    from the chief's newest checkpoint and finish the job."""
    monkeypatch.setenv("FFEM_HEALTH_CHECK_SECONDS", "2")
    run = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    workers = start_workers(pack_dir, run, tmp_path, cluster, RESUME_FLAGS, "a")
    try:
        kill_worker_1_mid_epoch(workers, run)
        assert workers[0].poll() is None, "worker 0 stopped instead of waiting to rejoin"
        (workers[1],) = start_workers(pack_dir, run, tmp_path, cluster, RESUME_FLAGS, "b", indexes=(1,))
    except BaseException:
        finish(workers, timeout=0)
        raise
    outputs = finish(workers, timeout=400)
    chief_log = " ".join(outputs[0][1].split())
    assert "worker 0: a peer was lost" in chief_log and "starting again to rejoin" in chief_log
    assert "resuming at step" in chief_log and "resuming at step" in " ".join(outputs[1][1].split())
    assert "3 epochs, 18 steps" in " ".join(outputs[0][0].split())
    assert (run / "embedder.keras").is_file()


def test_a_worker_that_keeps_losing_peers_gives_up_with_one_line(monkeypatch):
    from ffem_cli.errors import FfemError
    from ffem_cli.train import strategy

    monkeypatch.setenv("FFEM_REJOINS", str(strategy.MAX_REJOINS))
    monkeypatch.setattr(strategy.os, "execv", lambda *args: pytest.fail("started again past the limit"))
    with pytest.raises(FfemError, match=f"lost a peer {strategy.MAX_REJOINS + 1} times .*giving up"):
        strategy.rejoin(strategy.PeerLost("task 1 is down"))
