"""Cost of the ArcFace margin head per training step versus the number of classes.

For C in {1k, 10k, 100k}: forward + backward of the loss w.r.t. the
embeddings and the (512, C) weight matrix, batch B (64 by default), on the
TensorFlow backend in a ``tf.function``. Prints ms/step for ArcFace and for
NormFace (the same normalised head without a margin) measured in the same
run, the ArcFace/NormFace ratio, ms per 1k classes (flat = linear in C), and
how many float (B, C) tensors the ArcFace forward graph creates next to
NormFace's (the margin runs on the (B, 1) target column, so ArcFace adds no
second logits matrix).

    .venv/bin/python bench/heads.py [--quick] [--batch 128]
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.reference import reference_line  # noqa: E402
from ffem_cli.losses import build_loss  # noqa: E402

EMBEDDING_SIZE = 512


def step_function(layer):
    @tf.function
    def step(embeddings, labels):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss = layer(embeddings, labels)
        return loss, tape.gradient(loss, [embeddings, layer.kernel])
    return step


def ms_per_step(layer, embeddings, labels, steps):
    step = step_function(layer)
    step(embeddings, labels)  # trace + warm up
    start = time.perf_counter()
    for _ in range(steps):
        loss, grads = step(embeddings, labels)
    grads[1].numpy()
    return 1000.0 * (time.perf_counter() - start) / steps


def logits_sized_tensors(layer, embeddings, labels):
    """Float tensors of shape (B, C) in the traced forward graph of ``layer``."""
    graph = tf.function(lambda e, y: layer(e, y)).get_concrete_function(embeddings, labels).graph
    batch, classes = embeddings.shape[0], layer.num_classes
    return sum(1 for op in graph.get_operations() for out in op.outputs
               if out.dtype.is_floating and out.shape.as_list() == [batch, classes])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps per size")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(reference_line())
    steps = 3 if args.quick else 10
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(args.batch, EMBEDDING_SIZE)).astype("float32")
    embeddings = tf.constant(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True))
    print(f"ArcFace head, batch {args.batch}, D={EMBEDDING_SIZE}, {steps} steps per size, "
          f"TF {tf.__version__} on {tf.config.list_logical_devices()[0].device_type}")
    print(f"{'classes':>8} {'arcface ms':>11} {'normface ms':>12} {'ratio':>6} "
          f"{'ms/1k cls':>10} {'BxC arc/norm':>13}")
    for classes in (1_000, 10_000, 100_000):
        labels = tf.constant(rng.integers(0, classes, args.batch), dtype=tf.int32)
        arcface = build_loss("arcface", classes, EMBEDDING_SIZE)
        normface = build_loss("normface", classes, EMBEDDING_SIZE)
        arc_ms = ms_per_step(arcface, embeddings, labels, steps)
        norm_ms = ms_per_step(normface, embeddings, labels, steps)
        count = (logits_sized_tensors(arcface, embeddings, labels),
                 logits_sized_tensors(normface, embeddings, labels))
        print(f"{classes:>8} {arc_ms:>11.1f} {norm_ms:>12.1f} {arc_ms / norm_ms:>6.2f} "
              f"{arc_ms / (classes / 1000):>10.2f} {count[0]:>6}/{count[1]:<6}")


if __name__ == "__main__":
    main()
