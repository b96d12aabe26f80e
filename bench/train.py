"""Images/s of the trainer's training step, fp32 vs mixed precision, with and without XLA.

The step is the one ``ffem train`` runs: ``train.model.TrainingModel``
(embedder + ArcFace head, 1000 classes by default, top-1 accuracy tracked)
compiled with ``train.model.build_optimizer`` (SGD, momentum 0.9, Nesterov,
weight decay 5e-4, on the trainer's ``WarmupDecay`` cosine schedule) and trained by Keras's own
``train_on_batch``: forward, loss, gradients, optimizer update. The input is
one synthetic 112×112 batch already on the device, repeated, so the figures
measure the step, not the input pipeline. Warm-up steps (tracing, XLA
compilation) are timed separately and excluded from images/s.

Mixed precision is ``mixed_bfloat16`` on a CPU, ``mixed_float16`` on a GPU
under TensorFlow and ``mixed_bfloat16`` on a GPU under JAX. Achieved TFLOP/s
counts a training image as 3 × the embedder's forward FLOPs
(``models.count_flops``: 2 · MACs of conv/dense layers; iresnet50 ≈ 12.6
GFLOP forward, 37.9 GFLOP per training image). On a known GPU the fraction
of its dense peak is printed: bf16/fp16 tensor-core peak for mixed precision,
plain FP32 peak for fp32 (TensorFlow and JAX may use TF32 tensor cores for
fp32 matmuls and convolutions, so an fp32 fraction can exceed 1).

The script needs no TensorFlow under ``KERAS_BACKEND=jax``. Defaults on a
GPU: batch 128 (512 with JAX, the issue's goal setting: iresnet50 ≥ 3,900
and mobilefacenet ≥ 4,400 images/s on one H100), 3 warm-up + 20 timed
steps. On a CPU the default keeps the whole run within minutes on 2 cores:
batch 32, 1 warm-up + 2 timed steps, and no XLA rows for iresnet50 (XLA's
CPU compile and convolutions take minutes there; ``--xla both`` forces
them). On JAX every step is an XLA program; ``jit_compile=False`` means
op-by-op eager dispatch, so that row only runs when asked (``--xla off``).

    .venv/bin/python bench/train.py                  # both backbones, fp32/mixed, XLA on/off
    .venv/bin/python bench/train.py --batch-size 128 # the issue's batch (slow on a CPU)
    .venv/bin/python bench/train.py --quick          # mobilefacenet, batch 16, 2 timed steps
    KERAS_BACKEND=jax python bench/train.py --backbones iresnet50 --precision mixed
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.ERROR)  # each row's new model retraces its step

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from bench.reference import reference_line  # noqa: E402
from ffem_cli.losses import build_loss  # noqa: E402
from ffem_cli.models import BACKBONES, build_embedder, count_flops, precision_policy  # noqa: E402
from ffem_cli.train.model import TrainingModel, build_optimizer  # noqa: E402
from ffem_cli.train.schedules import WarmupDecay  # noqa: E402

IMAGE_SIZE = 112
EMBEDDING_SIZE = 512
# Dense (non-sparse) peak TFLOP/s: (name fragment, bf16/fp16 tensor core, plain fp32), first match wins.
GPU_PEAKS = (
    ("H100 PCIe", 756.0, 51.0),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.0, 67.0),  # SXM / "H100 80GB HBM3"
    ("H200", 989.0, 67.0),
    ("A100", 312.0, 19.5),
)


def gpu_name() -> str | None:
    """The GPU the active backend trains on, or None when it runs on the CPU."""
    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return gpus[0].device_kind if gpus else None
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return None
        return nvidia_smi_name() or "unknown GPU"
    raise SystemExit(f"bench/train.py supports the tensorflow and jax backends, not {keras.backend.backend()}")


def nvidia_smi_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def peak_tflops(gpu: str | None, mixed: bool) -> float | None:
    """Dense peak TFLOP/s of ``gpu`` for the step's arithmetic; None on a CPU or an unknown GPU."""
    for fragment, half, single in GPU_PEAKS:
        if gpu and fragment.lower() in gpu.lower():
            return half if mixed else single
    return None


def synthetic_batch(batch: int, classes: int):
    """(pixels (B, 112, 112, 3) float32 in [0, 255], labels (B,) int32) as device tensors."""
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    labels = rng.integers(0, classes, batch).astype("int32")
    return ops.convert_to_tensor(pixels), ops.convert_to_tensor(labels)


def build_training_model(backbone: str, classes: int, xla: bool) -> TrainingModel:
    """The trainer's model under the current policy: embedder + ArcFace head, SGD on WarmupDecay."""
    embedder = build_embedder(backbone, BACKBONES[backbone].default_pooling, EMBEDDING_SIZE, IMAGE_SIZE)
    loss_layer = build_loss("arcface", classes, EMBEDDING_SIZE)
    # create the head's weights by one call, as the trainer does
    loss_layer(ops.zeros((2, EMBEDDING_SIZE)), ops.zeros((2,), "int32"))
    model = TrainingModel(embedder, loss_layer)
    schedule = WarmupDecay(0.1, total_steps=10_000, decay="cosine")
    model.compile(optimizer=build_optimizer("sgd", schedule, weight_decay=5e-4), jit_compile=xla)
    return model


def bench_step(backbone: str, policy: str, xla: bool, batch: int, classes: int, warmup: int, steps: int) -> dict:
    """Seconds of warm-up and images/s of ``steps`` timed ``train_on_batch`` calls for one setting.

    The precision policy stays set while the step is traced and timed, as in the trainer.
    """
    keras.backend.clear_session()
    with precision_policy(policy):
        model = build_training_model(backbone, classes, xla)
        pixels, labels = synthetic_batch(batch, classes)
        start = time.perf_counter()
        for _ in range(warmup):
            logs = model.train_on_batch(pixels, labels, return_dict=True)
        warmup_seconds = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            logs = model.train_on_batch(pixels, labels, return_dict=True)  # host floats: a sync
        seconds = (time.perf_counter() - start) / steps
    if not np.isfinite(logs["loss"]):
        raise SystemExit(f"{backbone} {policy} xla={xla}: the loss is {logs['loss']}")
    return {
        "warmup_s": warmup_seconds,
        "images_per_s": batch / seconds,
        "train_flops_per_image": 3 * count_flops(model.embedder),
        "loss": float(logs["loss"]),
    }


def parse_args(on_gpu: bool):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="batch 16, 1 warm-up + 2 timed steps, mobilefacenet only (unless --backbones)",
    )
    parser.add_argument(
        "--backbones",
        nargs="+",
        choices=list(BACKBONES),
        help="default: mobilefacenet iresnet50 (mobilefacenet with --quick)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="images per step (GPU: 128, 512 with JAX; CPU: 32; 16 with --quick)",
    )
    parser.add_argument("--precision", choices=("fp32", "mixed", "both"), default="both")
    parser.add_argument(
        "--xla",
        choices=("on", "off", "both"),
        help="jit_compile (default both; JAX: on; CPU: off only for iresnet50)",
    )
    parser.add_argument("--steps", type=int, help="timed steps (default 20 on a GPU, 2 on a CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 3 on a GPU, 1 on a CPU)")
    parser.add_argument("--classes", type=int, default=1000, help="ArcFace head width (default 1000)")
    args = parser.parse_args()
    print(reference_line())
    jax = keras.backend.backend() == "jax"
    args.backbones = args.backbones or (["mobilefacenet"] if args.quick else ["mobilefacenet", "iresnet50"])
    args.batch_size = args.batch_size or (16 if args.quick else (512 if jax else 128) if on_gpu else 32)
    args.steps = args.steps or (2 if args.quick or not on_gpu else 20)
    args.warmup = args.warmup if args.warmup is not None else (3 if on_gpu and not args.quick else 1)
    return args


def xla_modes(choice: str | None, backbone: str, on_gpu: bool) -> list[bool]:
    """The jit_compile settings to time for ``backbone`` (see the module docstring for defaults)."""
    if choice is None:
        if keras.backend.backend() == "jax":
            choice = "on"
        else:
            choice = "both" if on_gpu or backbone == "mobilefacenet" else "off"
    return {"on": [True], "off": [False], "both": [False, True]}[choice]


def main() -> None:
    gpu = gpu_name()
    args = parse_args(gpu is not None)
    backend = keras.backend.backend()
    mixed_policy = "mixed_float16" if gpu and backend == "tensorflow" else "mixed_bfloat16"
    policies = {"fp32": ["float32"], "mixed": [mixed_policy], "both": ["float32", mixed_policy]}[args.precision]
    device = gpu or f"CPU ({os.cpu_count()} cores)"
    print(
        f"keras {keras.__version__}, backend {backend}, device {device}; batch {args.batch_size} at "
        f"{IMAGE_SIZE}x{IMAGE_SIZE}, ArcFace {args.classes} classes, SGD; {args.warmup} warm-up + "
        f"{args.steps} timed steps per row"
    )
    if backend == "jax" and args.xla is None:
        print("JAX: every row is XLA-compiled (jit_compile=False would be op-by-op eager; --xla off runs it)")
    if not gpu and backend != "jax" and args.xla is None and set(args.backbones) - {"mobilefacenet"}:
        print(
            "CPU: no XLA rows for backbones other than mobilefacenet (minutes of XLA compile and "
            "slow XLA CPU convolutions on 2 cores); --xla both runs them"
        )
    print("training FLOPs per image = 3 x forward FLOPs (models.count_flops)")
    print(
        f"{'backbone':<15}{'precision':<16}{'xla':<5}{'warm-up s':>10}{'images/s':>11}"
        f"{'GFLOP/img':>11}{'TFLOP/s':>9}{'of peak':>9}"
    )
    for backbone in args.backbones:
        for policy in policies:
            for xla in xla_modes(args.xla, backbone, gpu is not None):
                row = bench_step(backbone, policy, xla, args.batch_size, args.classes, args.warmup, args.steps)
                tflops = row["images_per_s"] * row["train_flops_per_image"] / 1e12
                peak = peak_tflops(gpu, policy != "float32")
                share = f"{tflops / peak:.1%}" if peak else "-"
                print(
                    f"{backbone:<15}{policy:<16}{'on' if xla else 'off':<5}{row['warmup_s']:>10.1f}"
                    f"{row['images_per_s']:>11.1f}{row['train_flops_per_image'] / 1e9:>11.2f}"
                    f"{tflops:>9.3f}{share:>9}",
                    flush=True,
                )
    if gpu and peak_tflops(gpu, True) is None:
        print(f"peak FLOP/s of {gpu!r} unknown: no fraction printed (known: {', '.join(f for f, _, _ in GPU_PEAKS)})")


if __name__ == "__main__":
    main()
