"""Inference speed of the exported MobileFaceNet on this machine's CPU.

Builds the default embedder (mobilefacenet + GDC, 512-d, 112×112; random
weights with batch-norm statistics taken from the benchmark faces, so the
quantized models see realistic activation ranges), exports it with
``ffem_cli.export`` (SavedModel → TFLite fp32 / fp16 / dynamic-range int8 /
full-integer int8; ONNX via tf2onnx) and times, in one process:

* per-face latency: batch 1, median of many calls;
* throughput: batch 64, faces per second (median call).

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

    .venv/bin/python bench/export.py            # 200 batch-1 calls, 8 batch-64 calls
    .venv/bin/python bench/export.py --quick    # 20 and 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few timed calls (a smoke run)")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for every runtime (default 1)"
    )
    parser.add_argument("--backbone", default="mobilefacenet")
    return parser.parse_args()


def median_seconds(call, repeats: int, warmup: int) -> float:
    """Median wall time of ``call()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_faces(image_size: int, count: int) -> tuple[np.ndarray, str]:
    from ffem_cli import realdata
    from ffem_cli.export import faces

    crop = faces.FaceCrop(image_size)
    lfw = realdata.lfw_root()
    reason = realdata.missing_reason(lfw)
    if reason is None:
        return faces.folder_faces(
            lfw / "images", crop, count
        ), f"LFW ({count} images, resized whole)"
    print(f"real-data part skipped: {reason}; using synthetic faces")
    return faces.synthetic_faces(crop, count), f"synthetic drawn faces ({count})"


def set_batchnorm_statistics(model, images: np.ndarray) -> None:
    """Moving mean/variance := the statistics of ``images`` (as after training)."""
    import keras

    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.momentum = 0.0
    model(images.astype("float32"), training=True)
    for layer in layers:
        layer.momentum = 0.99


def main() -> None:
    args = parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    from ffem_cli.export import converters, runtimes
    from ffem_cli.export.parity import cosine_parity
    from ffem_cli.export.quiet import captured_output
    from ffem_cli.models import build_embedder

    single_repeats, batch_repeats = (20, 1) if args.quick else (200, 8)
    size, batch = 112, 64
    model = build_embedder(args.backbone, "gdc", 512, size)
    faces, described = bench_faces(size, 256)
    set_batchnorm_statistics(model, faces[:128])
    one, many = faces[:1], faces[:batch]
    print(
        f"{args.backbone}: {model.count_params():,} parameters, input {size}x{size}; faces: {described}; "
        f"threads: {args.threads}; TF {tf.__version__}, Keras {keras.__version__}"
    )

    graph_call = tf.function(lambda x: model(x, training=False))
    xla_call = tf.function(lambda x: model(x, training=False), jit_compile=True)
    keras_ways = {
        "keras eager model(x)": lambda x: model(x, training=False),
        "keras model.predict": lambda x: model.predict(x, verbose=0, batch_size=len(x)),
        "keras tf.function": graph_call,
        "keras tf.function XLA": xla_call,
    }
    results = {}
    one_float, many_float = one.astype("float32"), many.astype("float32")
    for name, call in keras_ways.items():
        latency = median_seconds(lambda c=call: c(one_float), single_repeats, warmup=3)
        throughput = batch / median_seconds(lambda c=call: c(many_float), batch_repeats, warmup=1)
        results[name] = (latency, throughput, None)
        print(f"  timed {name}")

    reference = np.asarray(model(faces[128:].astype("float32"), training=False))
    with tempfile.TemporaryDirectory() as work:
        saved_model = Path(work) / "saved_model"
        with captured_output():
            converters.write_savedmodel(model, saved_model, size)
            exports = {
                f"tflite {q}": converters.tflite_bytes(saved_model, q, faces[:128])
                for q in converters.QUANTIZATIONS
            }
            exports["onnx"] = converters.onnx_bytes(model, size)
        for name, content in exports.items():
            with captured_output():
                make = runtimes.onnx_runtime if name == "onnx" else runtimes.tflite_runtime
                embed = make(content, threads=args.threads)
                parity = cosine_parity(
                    reference, runtimes.embed_in_batches(embed, faces[128:], batch)
                )
                latency = median_seconds(lambda e=embed: e(one), single_repeats, warmup=3)
                throughput = batch / median_seconds(
                    lambda e=embed: e(many), batch_repeats, warmup=1
                )
            results[name] = (latency, throughput, parity)
            print(f"  timed {name} ({len(content) / 1e6:.1f} MB)")

    compiled = ["keras tf.function", "keras tf.function XLA"]
    baseline = min(compiled, key=lambda n: results[n][0])
    base_latency, base_throughput, _ = results[baseline]
    print(
        f"\nbaseline for ratios: {baseline} (the faster tf.function-compiled Keras call at batch 1)"
    )
    header = f"{'runtime':<24}{'batch-1 ms':>11}{'speed x':>9}{'batch-64 faces/s':>18}{'x':>7}{'min cos':>10}{'mean cos':>10}"
    print(header)
    print("-" * len(header))
    for name, (latency, throughput, parity) in results.items():
        cos = (
            f"{parity.min_cosine:>10.5f}{parity.mean_cosine:>10.5f}"
            if parity
            else f"{'(ref)':>10}{'':>10}"
        )
        print(
            f"{name:<24}{latency * 1e3:>11.2f}{base_latency / latency:>9.2f}"
            f"{throughput:>18.1f}{throughput / base_throughput:>7.2f}{cos}"
        )
    ratio = base_latency / results["tflite none"][0]
    verdict = "met" if ratio >= 1.8 else "NOT met"
    print(f"\ngoal TFLite fp32 >= 1.8x Keras batch-1 speed: {ratio:.2f}x ({verdict})")
    print(
        "note: the network has random weights; the int8 cosines are a pessimistic stand-in for a trained model's"
    )


if __name__ == "__main__":
    main()
