"""Choosing the ``tf.distribute`` strategy: one device, several local devices, several machines.

- ``TF_CONFIG`` set in the environment → ``MultiWorkerMirroredStrategy``
  (synchronous data parallelism across machines; every worker runs the same
  ``ffem train`` command). Example for two machines, run on each with its own
  ``"index"``::

      TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
                  "task": {"type": "worker", "index": 0}}' \\
          ffem train --data packs/x --run runs/x --stage classifier

  Worker 0 (the chief) writes the run directory; the others write theirs to
  a scratch folder that is deleted at the end. Every worker restores from
  the run directory's checkpoints, so a job started again resumes.
- several local devices (``--devices N``, default: every visible GPU) →
  ``MirroredStrategy``. On a CPU-only machine ``--devices N`` uses N logical
  CPU devices (only when they were configured before TensorFlow started;
  tests do this).
- ``--gpu ID`` (repeatable; EE488B's device choice) → those GPUs only, by
  their index among the visible ones (one: ``OneDeviceStrategy``).
- otherwise TensorFlow's default strategy (one device).

The global batch (``--batch-size``) is split evenly among all replicas.
"""

from __future__ import annotations

import json
import os

from ffem_cli.errors import FfemError


def make_strategy(devices: int = 0, gpu_ids: list[int] | tuple[int, ...] = ()):
    """The strategy for ``devices`` local replicas (0 = every GPU, or one CPU), or for the
    GPUs numbered ``gpu_ids`` (then ``devices`` must be 0 or their count)."""
    import tensorflow as tf

    if gpu_ids:
        return _strategy_on_gpus(list(gpu_ids), devices)
    if os.environ.get("TF_CONFIG"):
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as exc:
            raise FfemError(f"TF_CONFIG is not valid JSON ({exc})") from exc
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    available = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    wanted = devices or (len(gpus) if gpus else 1)
    if wanted > len(available):
        kind = "GPU" if gpus else "CPU"
        raise FfemError(f"--devices {wanted} asked for, but only {len(available)} {kind} device(s) are visible")
    if wanted == 1:
        return tf.distribute.OneDeviceStrategy(available[0]) if gpus else tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(available[:wanted])


def _strategy_on_gpus(gpu_ids: list[int], devices: int):
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    missing = [i for i in gpu_ids if not 0 <= i < len(gpus)]
    if missing:
        raise FfemError(
            f"--gpu {missing[0]}: only {len(gpus)} GPU(s) are visible" + (f" (ids 0-{len(gpus) - 1})" if gpus else "")
        )
    if len(set(gpu_ids)) != len(gpu_ids):
        raise FfemError(f"--gpu lists a GPU twice: {gpu_ids}")
    if devices and devices != len(gpu_ids):
        raise FfemError(f"--devices {devices} disagrees with {len(gpu_ids)} --gpu id(s)")
    chosen = [gpus[i] for i in gpu_ids]
    if len(chosen) == 1:
        return tf.distribute.OneDeviceStrategy(chosen[0])
    return tf.distribute.MirroredStrategy(chosen)


def replica_devices(strategy) -> list[str]:
    """Names of the devices the strategy's replicas run on (this machine's, for multi-worker)."""
    import tensorflow as tf

    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy: whatever device TensorFlow places ops on
        gpus = tf.config.list_logical_devices("GPU")
        return [(gpus or tf.config.list_logical_devices("CPU"))[0].name]


def is_chief() -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    config = json.loads(raw)
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("index", 0) == 0


def check_batch(batch_size: int, replicas: int) -> None:
    """Refuse a global batch that does not split evenly among the replicas."""
    if batch_size % replicas:
        raise FfemError(
            f"batch size {batch_size} does not divide among {replicas} replicas; use a multiple of {replicas}"
        )
