"""Inference speed of the exported MobileFaceNet on this machine's CPU.

Builds the default embedder (mobilefacenet + GDC, 512-d, 112×112; random
weights with batch-norm statistics taken from the benchmark faces, so the
quantized models see realistic activation ranges), exports it with
``ffem_cli.export`` (SavedModel → TFLite fp32 / fp16 / dynamic-range int8 /
full-integer int8; ONNX via tf2onnx) and times, in one process:

* per-face latency: batch 1, median (and best) of many calls;
* throughput: batch 64, faces per second (median call).

Calls are interleaved (each round runs every runtime in turn) so that the
changing load of a shared machine hits all of them alike.

Every runtime uses the same thread count (default 1: TensorFlow intra- and
inter-op threads, the TFLite interpreter's ``num_threads``, onnxruntime's
``intra_op_num_threads``). The Keras baseline is measured three ways —
eager ``model(x, training=False)``, ``model.predict`` and a
``tf.function``-compiled call (plain graph, and XLA ``jit_compile=True``) —
and the ratios use the faster compiled call, the fair baseline: eager and
``predict`` carry Python/dispatch overhead that a deployed model would not.
Parity (min cosine with the Keras embeddings) is printed for each export.

Faces: LFW images (whole 250×250 deep-funneled photo resized, the face is
centred) when ``../shared/data`` is present, else synthetic drawn faces.

    .venv/bin/python bench/export.py            # 40 rounds x 5 batch-1 calls, 5 batch-64 calls
    .venv/bin/python bench/export.py --quick    # 4 rounds x 5, 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.reference import reference_line  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few timed calls (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="threads for every runtime (default 1)")
    parser.add_argument("--backbone", default="mobilefacenet")
    return parser.parse_args()


def interleaved_seconds(calls: dict, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Wall times of every call, interleaved: each round runs each call ``per_round`` times.

    On a shared machine the load changes minute to minute; interleaving puts
    every runtime under the same conditions, so the ratios stay fair.
    """
    for call in calls.values():  # warm-up, not timed
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return times


def bench_faces(image_size: int, count: int) -> tuple[np.ndarray, str]:
    from ffem_cli import realdata
    from ffem_cli.export import faces
    from ffem_cli.inference.embedding import FacePrep

    prep = FacePrep(image_size=image_size)
    lfw = realdata.lfw_root()
    reason = realdata.missing_reason(lfw)
    if reason is None:
        return faces.folder_faces(lfw / "images", prep, count), f"LFW ({count} images, resized whole)"
    print(f"real-data part skipped: {reason}; using synthetic faces")
    return faces.synthetic_faces(prep, count), f"synthetic drawn faces ({count})"


def set_batchnorm_statistics(model, images: np.ndarray) -> None:
    """Moving mean/variance := the statistics of ``images`` (as after training)."""
    import keras

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = 0.0
    model(images.astype("float32"), training=True)
    for layer in layers:
        layer.momentum = 0.99


def main() -> None:
    args = parse_args()
    print(reference_line())
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    from ffem_cli.export import converters, runtimes
    from ffem_cli.export.parity import cosine_parity
    from ffem_cli.export.quiet import captured_output
    from ffem_cli.models import build_embedder

    rounds_one, rounds_many = (4, 1) if args.quick else (40, 5)
    size, batch = 112, 64
    model = build_embedder(args.backbone, "gdc", 512, size)
    faces, described = bench_faces(size, 256)
    set_batchnorm_statistics(model, faces[:128])
    one, many = faces[:1], faces[:batch]
    print(
        f"{args.backbone}: {model.count_params():,} parameters, input {size}x{size}; faces: {described}; "
        f"threads: {args.threads}; TF {tf.__version__}, Keras {keras.__version__}"
    )

    runners = {
        "keras eager model(x)": lambda x: model(x, training=False),
        "keras model.predict": lambda x: model.predict(x, verbose=0, batch_size=len(x)),
        "keras tf.function": tf.function(lambda x: model(x, training=False)),
        "keras tf.function XLA": tf.function(lambda x: model(x, training=False), jit_compile=True),
    }
    inputs = {name: (one.astype("float32"), many.astype("float32")) for name in runners}
    reference = np.asarray(model(faces[128:].astype("float32"), training=False))
    parities, sizes = {}, {}
    with tempfile.TemporaryDirectory() as work, captured_output():
        saved_model = Path(work) / "saved_model"
        converters.write_savedmodel(model, saved_model, size)
        exports = {
            f"tflite {q}": converters.tflite_bytes(saved_model, q, faces[:128]) for q in converters.QUANTIZATIONS
        }
        exports["onnx"] = converters.onnx_bytes(model, size)
        for name, content in exports.items():
            make = runtimes.onnx_runtime if name == "onnx" else runtimes.tflite_runtime
            runners[name] = make(content, threads=args.threads)
            inputs[name] = (one, many)
            sizes[name] = len(content) / 1e6
            embedded = runtimes.embed_in_batches(runners[name], faces[128:], batch)
            parities[name] = cosine_parity(reference, embedded)
    print(f"exported: {', '.join(f'{n} ({mb:.1f} MB)' for n, mb in sizes.items())}")

    print(f"timing batch 1: {rounds_one} interleaved rounds of 5 calls per runtime …")
    times_one = interleaved_seconds({n: (lambda r=r, x=inputs[n][0]: r(x)) for n, r in runners.items()}, rounds_one, 5)
    print(f"timing batch {batch}: {rounds_many} interleaved rounds of 1 call per runtime …")
    times_many = interleaved_seconds(
        {n: (lambda r=r, x=inputs[n][1]: r(x)) for n, r in runners.items()}, rounds_many, 1
    )
    latency = {n: statistics.median(t) for n, t in times_one.items()}
    best = {n: min(t) for n, t in times_one.items()}
    throughput = {n: batch / statistics.median(t) for n, t in times_many.items()}

    baseline = min(["keras tf.function", "keras tf.function XLA"], key=latency.get)
    print(f"\nbaseline for ratios: {baseline} (the faster tf.function-compiled Keras call at batch 1)")
    header = (
        f"{'runtime':<23}{'b1 median ms':>13}{'x':>6}{'b1 best ms':>11}{'x':>6}"
        f"{'b64 faces/s':>12}{'x':>6}{'min cos':>9}{'mean cos':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in runners:
        parity = parities.get(name)
        cos = f"{parity.min_cosine:>9.4f}{parity.mean_cosine:>9.4f}" if parity else f"{'(ref)':>9}"
        print(
            f"{name:<23}{latency[name] * 1e3:>13.2f}{latency[baseline] / latency[name]:>6.2f}"
            f"{best[name] * 1e3:>11.2f}{best[baseline] / best[name]:>6.2f}"
            f"{throughput[name]:>12.1f}{throughput[name] / throughput[baseline]:>6.2f}{cos}"
        )
    ratio = latency[baseline] / latency["tflite none"]
    verdict = "met" if ratio >= 1.8 else "NOT met"
    print(f"\ngoal TFLite fp32 >= 1.8x Keras batch-1 speed (medians): {ratio:.2f}x ({verdict})")
    print("note: random weights; the int8 cosines are a pessimistic stand-in for a trained model's")


if __name__ == "__main__":
    main()
