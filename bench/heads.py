"""Partial FC against the full ArcFace head: time and memory of a training step, on 1 and 2 devices.

For C classes (100k and 1M; ``--quick``: 10k and 100k), D = 512, a global
batch of 128: the ArcFace head's forward, backward and SGD-momentum update
(``train.head_optimizer``: Partial FC updates only its sampled rows), the
full head (r = 1) against Partial FC (``--sample-rate``, 0.1 by default).
Every configuration runs in its own subprocess:

- ``tf 1 device``: TensorFlow on one CPU device.
- ``tf 2 replicas``: MirroredStrategy over two logical CPU devices (64 per
  replica): every replica holds a full copy of the centres.
- ``jax 2 shards``: JAX with the centres sharded over two host devices by
  ``keras.distribution.ModelParallel`` (each device holds C/2 rows, the batch
  is split too); SGD with momentum inside one ``jax.jit``. JAX's gradient of
  the gathered rows is a dense (C/2, D) block per device, so there every
  row's momentum moves.

Printed per configuration: ms per step (median), the state per device
(centres + momentum, MiB, from the arrays' sizes), and the step peak: the
highest resident memory sampled every 2 ms during the steps minus the
resident memory just before the first step, once the state exists (MiB: what
a step needs beyond its state, including the one-off tracing/compilation of
the step, a few tens of MiB). Then the full / Partial FC ratios of time and step peak.

    nice -n 15 .venv/bin/python bench/heads.py [--quick] [--classes 100000 1000000] [--sample-rate 0.1]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

EMBEDDING_SIZE = 512
BATCH = 128
MIB = 2**20


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Highest resident memory seen by a 2 ms polling thread while the ``with`` body runs."""

    def __enter__(self):
        self.base = self.peak = resident_bytes()
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, resident_bytes())


def batch(classes):
    import numpy as np

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(BATCH, EMBEDDING_SIZE)).astype("float32")
    return embeddings, rng.integers(0, classes, BATCH).astype("int32")


def timed(step, steps):
    """Median ms of ``steps`` steps after a first one (trace, compile); memory over all of them.

    The first step is inside the memory window: freed buffers are reused by the
    allocator without new resident pages, so a window after it would miss them.
    """
    times = []
    with PeakMemory() as memory:
        step()
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), memory


def tf_child(classes, rate, devices, steps):
    import tensorflow as tf

    if devices == 2:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.get_strategy()
    from ffem_cli.losses import build_loss
    from ffem_cli.train.head_optimizer import with_head_settings
    from ffem_cli.train.model import build_optimizer

    with strategy.scope():
        head = build_loss("arcface", classes, EMBEDDING_SIZE, sample_rate=rate)
        optimizer = build_optimizer("sgd", 0.1, momentum=0.9)
        with_head_settings(optimizer, head.trainable_variables)
        optimizer.build(head.trainable_variables)
    embeddings, labels = batch(classes)
    per_replica = BATCH // devices
    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: tuple(
            tf.constant(a[context.replica_id_in_sync_group * per_replica :][:per_replica]) for a in (embeddings, labels)
        )
    )

    def replica_step(embeddings, labels):
        with tf.GradientTape() as tape:
            loss = head(embeddings, labels) / devices
        optimizer.apply(tape.gradient(loss, head.trainable_variables), head.trainable_variables)
        return loss

    step = tf.function(lambda: strategy.run(replica_step, args=inputs))
    state = sum(v.numpy().nbytes for v in head.trainable_variables)
    state += sum(v.numpy().nbytes for v in optimizer.variables if len(v.shape) == 2)
    return timed(step, steps), state


def jax_child(classes, rate, devices, steps):
    import jax
    import keras
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = keras.distribution.DeviceMesh((devices,), ["shard"], jax.devices()[:devices])
    layout = keras.distribution.LayoutMap(mesh)
    layout[".*centres"] = ("shard", None)
    layout[".*kernel"] = (None, "shard")
    keras.distribution.set_distribution(keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="shard"))
    from ffem_cli.losses import build_loss

    head = build_loss("arcface", classes, EMBEDDING_SIZE, sample_rate=rate)
    weights = head.trainable_variables[0].value
    momentum = jax.device_put(jax.numpy.zeros(weights.shape), weights.sharding)
    others = [v.value for v in head.non_trainable_variables]
    split = NamedSharding(mesh.backend_mesh, PartitionSpec("shard"))
    embeddings, labels = (jax.device_put(a, split) for a in batch(classes))

    def update(weights, momentum, others):
        def loss(weights):
            return head.stateless_call([weights], others, embeddings, labels)

        (_, others), gradient = jax.value_and_grad(loss, has_aux=True)(weights)
        momentum = 0.9 * momentum - 0.1 * gradient
        return weights + 0.9 * momentum - 0.1 * gradient, momentum, others

    update = jax.jit(update, donate_argnums=(0, 1), out_shardings=(weights.sharding, weights.sharding, None))
    state = {"weights": weights, "momentum": momentum, "others": others}

    def step():
        state["weights"], state["momentum"], state["others"] = update(**state)
        state["weights"].block_until_ready()

    result = timed(step, steps)
    per_device = sum(a.addressable_shards[0].data.nbytes for a in (state["weights"], state["momentum"]))
    return result, per_device


def child(backend, classes, rate, devices, steps):
    (ms, memory), state = (tf_child if backend == "tf" else jax_child)(classes, rate, devices, steps)
    print(json.dumps({"ms": ms, "state_mib": state / MIB, "step_peak_mib": (memory.peak - memory.base) / MIB}))


CONFIGS = [("tf", 1, "tf 1 device"), ("tf", 2, "tf 2 replicas"), ("jax", 2, "jax 2 shards")]


def run_child(backend, classes, rate, devices, steps):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    if backend == "jax":
        env.update(KERAS_BACKEND="jax", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    command = [sys.executable, __file__, "--child", backend, str(classes), str(rate), str(devices), str(steps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode < 0:
        return {"error": f"killed by signal {-done.returncode} (SIGKILL: most likely out of memory)"}
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k classes, 2 timed steps")
    parser.add_argument("--classes", type=int, nargs="+")
    parser.add_argument("--sample-rate", type=float, default=0.1)
    parser.add_argument("--steps", type=int)
    parser.add_argument(
        "--config",
        action="append",
        choices=[name for _, _, name in CONFIGS],
        help="run only these configurations (repeatable; default all)",
    )
    parser.add_argument(
        "--max-state-gib",
        type=float,
        default=6.0,
        help="skip configurations whose centres + momentum on all devices exceed this (shared machine)",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backend, classes, rate, devices, steps = args.child
        return child(backend, int(classes), float(rate), int(devices), int(steps))
    sizes = args.classes or ([10_000, 100_000] if args.quick else [100_000, 1_000_000])
    steps = args.steps or (2 if args.quick else 3)
    print(
        f"ArcFace head, D={EMBEDDING_SIZE}, global batch {BATCH}, SGD momentum; full (r=1) vs "
        f"Partial FC r={args.sample_rate}; median of {steps} steps; {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench.reference import reference_line

    print(reference_line())
    print(f"{'classes':>9} {'config':<14} {'r':>4} {'ms/step':>9} {'state MiB/dev':>14} {'step peak MiB':>14}")
    for classes in sizes:
        for backend, devices, name in CONFIGS:
            if args.config and name not in args.config:
                continue
            results = {}
            copies = devices if backend == "tf" else 1  # mirrored replicas each hold all of it
            state_gib = 2 * classes * EMBEDDING_SIZE * 4 * copies / 2**30
            if state_gib > args.max_state_gib:
                print(f"{classes:>9} {name:<14} skipped: {state_gib:.1f} GiB of state > --max-state-gib")
                continue
            for rate in (1.0, args.sample_rate):
                result = results[rate] = run_child(backend, classes, rate, devices, steps)
                if "error" in result:
                    print(f"{classes:>9} {name:<14} {rate:>4} failed: {result['error']}")
                    continue
                print(
                    f"{classes:>9} {name:<14} {rate:>4} {result['ms']:>9.1f} {result['state_mib']:>14.1f} "
                    f"{result['step_peak_mib']:>14.1f}",
                    flush=True,
                )
            full, partial = results[1.0], results[args.sample_rate]
            if "error" not in full and "error" not in partial:
                print(
                    f"{'':>9} {name:<14} full/partial: time {full['ms'] / partial['ms']:.1f}x, step peak "
                    f"{full['step_peak_mib'] / max(partial['step_peak_mib'], 1e-9):.1f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
