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
  the run directory's checkpoints, so a job started again resumes. A worker
  that dies can be started again alone: TensorFlow's health check (every
  ``HEALTH_CHECK_SECONDS``) aborts the survivors' collectives, each survivor
  raises ``PeerLost`` and ``ffem train`` starts itself again
  (``rejoin``); all of them then wait for the whole cluster and continue
  from the chief's newest checkpoint.
- several local devices (``--devices N``, default: every visible GPU) →
  ``MirroredStrategy``. On a CPU-only machine ``--devices N`` uses N logical
  CPU devices (only when they were configured before TensorFlow started;
  tests do this).
- ``--gpu ID`` (repeatable; EE488B's device choice) → those GPUs only, by
  their index among the visible ones (one: ``OneDeviceStrategy``).
- otherwise TensorFlow's default strategy (one device).

On Keras's JAX backend (``KERAS_BACKEND=jax``) ``tf.distribute`` is not
used: ``--devices N`` / ``--gpu ID`` pick JAX devices, and ``JaxDevices``
sets a ``keras.distribution.ModelParallel`` over them. The batch is split
among the devices (data parallelism) and the classification head's
class-indexed weights (``CLASS_LAYOUTS``) are split by
class, C/N per device, as Partial FC v2 shards them; every other weight is
replicated. XLA inserts the collectives (the embeddings' all-gather, the
softmax's cross-device sums).

The global batch (``--batch-size``) is split evenly among all replicas.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys

from ffem_cli.console import err
from ffem_cli.errors import FfemError, op_error_lines, tidy_op_line

#: Seconds between TensorFlow's multi-worker peer health checks (its default is 30); a dead peer
#: aborts the collectives after at most this long plus three failed probes.
HEALTH_CHECK_SECONDS = float(os.environ.get("FFEM_HEALTH_CHECK_SECONDS", "10"))
#: Restarts of one worker after lost peers before ``ffem train`` gives up with an error.
MAX_REJOINS = 20


class PeerLost(Exception):
    """Another worker of a multi-worker job stopped answering; this worker must start again to rejoin."""


#: Name of the training model's loss layer: ``JaxDevices`` shards this layer's class-indexed weights.
HEAD_NAME = "class_head"
#: Variable paths (regular expressions, as ``keras.distribution.LayoutMap`` reads them) of the
#: head's class-indexed weights → their layout over the ``"devices"`` mesh axis: split by class.
CLASS_LAYOUTS = {
    rf"{HEAD_NAME}/(.+/)?(centres|centers|proxies)": ("devices", None),  # (C, D)
    rf"{HEAD_NAME}/(.+/)?kernel": (None, "devices"),  # (D, C)
    rf"{HEAD_NAME}/(.+/)?bias": ("devices",),  # (C,)
}


def make_strategy(devices: int = 0, gpu_ids: list[int] | tuple[int, ...] = ()):
    """The strategy for ``devices`` local replicas (0 = every GPU, or one CPU), or for the
    GPUs numbered ``gpu_ids`` (then ``devices`` must be 0 or their count).

    On Keras's JAX backend: a ``JaxDevices`` for the same choice of JAX devices.
    """
    import keras

    if keras.backend.backend() == "jax":
        if os.environ.get("TF_CONFIG"):
            raise FfemError("TF_CONFIG (several machines) needs the TensorFlow backend; unset KERAS_BACKEND=jax")
        return JaxDevices.choose(devices, gpu_ids)
    import tensorflow as tf

    if os.environ.get("TF_CONFIG") and not gpu_ids:
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as exc:
            raise FfemError(f"TF_CONFIG is not valid JSON ({exc})") from exc
        return _multi_worker_strategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    chosen = choose_devices(devices, gpu_ids, gpus, [d.name for d in tf.config.list_logical_devices("CPU")])
    if len(chosen) == 1:
        return tf.distribute.OneDeviceStrategy(chosen[0]) if gpus else tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(chosen)


def choose_devices(devices: int, gpu_ids, gpus: list, cpus: list, seen_by: str = "", more_cpus: str = "") -> list:
    """The devices to train on, out of the visible ``gpus`` and ``cpus``: those numbered
    ``gpu_ids``, else ``devices`` of the GPUs (0: all), or of the CPUs when there is no GPU
    (0: one). In the errors, ``seen_by`` (e.g. ``"JAX"``) names who sees the devices and
    ``more_cpus`` says how to get more CPU devices."""
    if gpu_ids:
        missing = [i for i in gpu_ids if not 0 <= i < len(gpus)]
        if missing:
            to = f" to {seen_by}" if seen_by else ""
            ids = f" (ids 0-{len(gpus) - 1})" if gpus else ""
            raise FfemError(f"--gpu {missing[0]}: only {len(gpus)} GPU(s) are visible{to}{ids}")
        if len(set(gpu_ids)) != len(gpu_ids):
            raise FfemError(f"--gpu lists a GPU twice: {list(gpu_ids)}")
        if devices and devices != len(gpu_ids):
            raise FfemError(f"--devices {devices} disagrees with {len(gpu_ids)} --gpu id(s)")
        return [gpus[i] for i in gpu_ids]
    available = gpus or cpus
    wanted = devices or (len(gpus) if gpus else 1)
    if wanted > len(available):
        kind = f"{seen_by} {'GPU' if gpus else 'CPU'}".strip()
        hint = f" (more CPU devices: {more_cpus})" if more_cpus and not gpus else ""
        raise FfemError(f"--devices {wanted} asked for, but only {len(available)} {kind} device(s) are visible{hint}")
    return available[:wanted]


def _multi_worker_strategy():
    import tensorflow as tf
    from tensorflow.python.distribute import collective_all_reduce_strategy

    extended = collective_all_reduce_strategy.CollectiveAllReduceExtended
    if hasattr(extended, "_check_health_interval"):  # a class setting, read when the health thread starts
        extended._check_health_interval = HEALTH_CHECK_SECONDS
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except peer_errors() as exc:
        raise PeerLost(peer_error_text(exc)) from None


def peer_errors() -> tuple[type[Exception], ...]:
    """TensorFlow's errors for a collective aborted because a peer is down or was restarted."""
    import tensorflow as tf

    return (
        tf.errors.UnavailableError,
        tf.errors.FailedPreconditionError,
        tf.errors.AbortedError,
        tf.errors.CancelledError,
        tf.errors.DeadlineExceededError,
    )


def peer_error_text(exc) -> str:
    """What a TensorFlow error for a lost peer says, in one line: the first line naming the abort
    or the unhealthy task, without the graph trace or the ``{{function_node …}}`` prefix."""
    lines = op_error_lines(exc.message or "")
    telling = [line for line in lines if re.search(r"abort|unhealthy|unavailable|restart", line, re.IGNORECASE)]
    text = tidy_op_line((telling or lines or [type(exc).__name__])[0])
    return text if len(text) <= 300 else text[:297] + "..."


def rejoin(lost: PeerLost) -> None:
    """Start this ``ffem train`` process again with its own command line (never returns).

    The new process builds the strategy, which waits until every worker is
    up, then resumes from the chief's newest checkpoint like any restart.
    ``FFEM_REJOINS`` counts the restarts; past ``MAX_REJOINS`` it is an error.
    """
    count = int(os.environ.get("FFEM_REJOINS", "0")) + 1
    if count > MAX_REJOINS:
        raise FfemError(f"this worker has lost a peer {count} times ({lost}); giving up after {MAX_REJOINS} restarts")
    err.print(
        f"worker {_task_index()}: a peer was lost ({lost}); starting again to rejoin from the newest checkpoint",
        highlight=False,
        soft_wrap=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(sys.stderr.fileno(), 2)  # the real stderr: the native-log filter's pipe dies with this process
    os.environ["FFEM_REJOINS"] = str(count)
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _task_index() -> int:
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


class JaxDevices:
    """What ffem uses of a ``tf.distribute`` strategy, on Keras's JAX backend: ``devices`` (JAX
    devices) split the batch, and with more than one the head's class-indexed weights are
    sharded by class (``keras.distribution.ModelParallel``, set here globally before any
    weight exists).

    A weight whose class count does not divide by the device count stays whole on every
    device; ``unsplit`` names those weights once they exist.
    """

    def __init__(self, devices: list):
        import keras

        self.devices = list(devices)
        self.num_replicas_in_sync = len(self.devices)
        self.distribution = None
        keras.distribution.set_distribution(None)  # an earlier run's, in this process
        if len(self.devices) > 1:
            mesh = keras.distribution.DeviceMesh((len(self.devices),), ["devices"], self.devices)
            layouts = keras.distribution.LayoutMap(mesh)
            for pattern, layout in CLASS_LAYOUTS.items():
                layouts[pattern] = layout
            self.distribution = _class_sharding(layouts)
            keras.distribution.set_distribution(self.distribution)

    @classmethod
    def choose(cls, devices: int, gpu_ids) -> JaxDevices:
        """``devices`` JAX devices (0 = every GPU, or one CPU), or the GPUs numbered ``gpu_ids``."""
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        more_cpus = "XLA_FLAGS=--xla_force_host_platform_device_count=N"
        return cls(choose_devices(devices, gpu_ids, gpus, jax.devices("cpu"), "JAX", more_cpus))

    def scope(self):
        return contextlib.nullcontext()

    def sharding_lines(self, variables) -> list[str]:
        """One line per class-indexed weight among ``variables``: its shape, and per device."""
        if self.distribution is None:
            return []
        lines = []
        for variable in variables:
            if not any(re.fullmatch(pattern, variable.path) for pattern in CLASS_LAYOUTS):
                continue
            if variable.path in self.distribution.unsplit:
                lines.append(
                    f"{variable.path} {tuple(variable.shape)}: whole on each of the {len(self.devices)} devices "
                    f"({self.distribution.unsplit[variable.path]} classes do not divide by {len(self.devices)})"
                )
                continue
            shard = tuple(variable.value.addressable_shards[0].data.shape)
            lines.append(f"{variable.path} {tuple(variable.shape)}: {shard} on each of {len(self.devices)} devices")
        return lines


def _class_sharding(layouts):
    """A ``ModelParallel`` over ``layouts`` that keeps whole (and names in ``unsplit``: path →
    class count) a weight whose class axis does not divide by the device count."""
    import keras

    class ClassSharding(keras.distribution.ModelParallel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.unsplit = {}

        def get_variable_layout(self, variable):
            layout = super().get_variable_layout(variable)
            count = self.device_mesh.shape[0]
            for size, axis in zip(variable.shape, layout.axes, strict=True):
                if axis is not None and size % count:
                    self.unsplit[variable.path] = size
                    return keras.distribution.TensorLayout([None] * len(variable.shape), self.device_mesh)
            return layout

    return ClassSharding(layout_map=layouts, batch_dim_name="devices")


def replica_devices(strategy) -> list[str]:
    """Names of the devices the strategy's replicas run on (this machine's, for multi-worker)."""
    if isinstance(strategy, JaxDevices):
        return [f"{d.platform}:{d.id}" for d in strategy.devices]
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
