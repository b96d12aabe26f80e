"""Forward+backward speed of the embedders on this machine's CPU.

For each backbone (default: mobilefacenet and iresnet50 with their default
heads, 512-d embedding, 112×112 input) this builds the embedder, compiles a
plain Keras training step (SGD, mean squared error against random unit
targets — a stand-in loss: the cost is the network's) and times
``train_on_batch`` after warm-up steps that are not counted. It also times
inference (``predict_on_batch``). Printed: parameters, forward GMACs per
image, images/s and the achieved GFLOP/s, counting a training image as
3 × 2 × MACs FLOPs (forward + two backward products) and an inference image
as 2 × MACs.

    .venv/bin/python bench/models.py            # batch 64, 3 timed steps
    .venv/bin/python bench/models.py --quick    # batch 16, 1 timed step
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.reference import reference_line  # noqa: E402
from ffem_cli.models import BACKBONES, build_embedder, count_macs, count_parameters  # noqa: E402


def timed_steps(step, steps: int) -> float:
    """Seconds per call of ``step`` over ``steps`` calls."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def bench_backbone(name: str, batch: int, steps: int, warmup: int, input_size: int) -> dict:
    model = build_embedder(name, BACKBONES[name].default_pooling, 512, input_size)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (batch, input_size, input_size, 3)).astype("float32")
    targets = rng.normal(size=(batch, 512)).astype("float32")
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)

    def train():
        model.train_on_batch(pixels, targets)

    def infer():
        model.predict_on_batch(pixels)

    for _ in range(warmup):
        train()
        infer()
    train_seconds = timed_steps(train, steps)
    infer_seconds = timed_steps(infer, steps)
    macs = count_macs(model)
    result = {
        "backbone": name,
        "parameters": count_parameters(model),
        "gmacs": macs / 1e9,
        "train_images_per_s": batch / train_seconds,
        "train_gflops_per_s": batch * 6 * macs / train_seconds / 1e9,
        "infer_images_per_s": batch / infer_seconds,
        "infer_gflops_per_s": batch * 2 * macs / infer_seconds / 1e9,
        "jit_compile": model.jit_compile,
    }
    keras.backend.clear_session()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16, 1 warm-up, 1 timed step")
    parser.add_argument("--batch", type=int, help="batch size (default 64, 16 with --quick)")
    parser.add_argument("--steps", type=int, help="timed steps (default 3, 1 with --quick)")
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--backbones", nargs="+", default=["mobilefacenet", "iresnet50"], choices=list(BACKBONES))
    args = parser.parse_args()
    print(reference_line())
    batch = args.batch or (16 if args.quick else 64)
    steps = args.steps or (1 if args.quick else 3)
    warmup = 1 if args.quick else 2

    print(
        f"keras {keras.__version__} backend={keras.backend.backend()} cpus={os.cpu_count()} "
        f"batch={batch} input={args.input_size} timed_steps={steps} warmup_steps={warmup}"
    )
    print("FLOP convention: training image = 3·2·MACs, inference image = 2·MACs")
    header = (
        f"{'backbone':<16}{'params (M)':>11}{'GMACs':>8}{'train img/s':>13}"
        f"{'train GFLOP/s':>15}{'infer img/s':>13}{'infer GFLOP/s':>15}  jit"
    )
    print(header)
    for name in args.backbones:
        r = bench_backbone(name, batch, steps, warmup, args.input_size)
        print(
            f"{r['backbone']:<16}{r['parameters'] / 1e6:>11.2f}{r['gmacs']:>8.3f}"
            f"{r['train_images_per_s']:>13.1f}{r['train_gflops_per_s']:>15.1f}"
            f"{r['infer_images_per_s']:>13.1f}{r['infer_gflops_per_s']:>15.1f}  {r['jit_compile']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
