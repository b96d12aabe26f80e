"""Benchmark: training-mode images/s from packed shards vs raw tf.data decode of the same JPEGs.

LFW images are packed (112x112 margin crops, 16 shards); the very same JPEG
crops are also written out as one file each. In the same process:

- raw:   ``tf.data`` over the files: shuffle (path, label) pairs,
         ``read_file`` + ``decode_jpeg`` (AUTOTUNE), batch, cast to float32,
         prefetch — the least a JPEG training input can do; it yields the
         same pixels, batch, dtypes and labels as the train variants.
- train: ``data.pipeline.train_dataset`` (seeded index permutation, records
         sliced from memory-mapped shards a batch at a time, then one map call
         per batch: parse, decode (+ crop/colour) in a map_fn, flip, cast)
         with the default augmentation (flip), none, flip + colour jitter,
         ``Augment.strong()`` (flip + crop/scale + colour), and P×K batches.
- eval:  ``data.pipeline.eval_dataset``.

Every epoch is a fresh dataset and iterator (as the trainer builds one per
epoch), after one warm-up epoch each. Variants alternate within each round
(the machine is shared: its load shifts between rounds, less within one);
each round's rate is divided by raw's in that round and the median [range]
of those ratios is printed, for streaming (after the first batch) and for
whole epochs (building + first batch included). The process CPU time per
image is printed too: unlike rates, it hardly depends on the load.
A training epoch costs ~70 ms to set up (generator, tf.data graph with a
map_fn, first batch) against raw's ~25 ms, so with --quick's 15-batch epochs
the whole-epoch ratio mostly measures that; the streaming ratio does not.
Goal: training mode (default augmentation) >= 0.8 of raw.

``--teardown SECONDS`` measures instead how long deleting a training
iterator takes once it has lived SECONDS (45: an epoch's length on LFW
View 1): ffem's pipeline (fixed parallelism, autotuner off) against the
same pipeline with AUTOTUNE parallelism and prefetch (as ffem built it
before), where tf.data's autotuner model thread held the delete until the
end of its current sleep (10 ms doubling to 60 s: at 41 s, 82 s, 142 s, …).

    .venv/bin/python bench/pipeline.py            # 6,000 images, 5 rounds
    .venv/bin/python bench/pipeline.py --quick    # 1,000 images, 2 rounds
    .venv/bin/python bench/pipeline.py --quick --teardown 45
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.reference import reference_line  # noqa: E402
from ffem_cli import realdata  # noqa: E402
from ffem_cli.data import pack as packing  # noqa: E402

RAW = "raw tf.data decode of the JPEG files"
BOX = {"x1": 62, "y1": 62, "x2": 187, "y2": 187}


def make_pack(count: int, folder: Path) -> Path:
    """Pack ``count`` LFW images of people with 2+ photos (at most 10 each, so P×K can run)."""
    images = realdata.lfw_root() / "images"
    keys = []
    for person in sorted(p for p in images.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= 2:
            keys.extend(p.relative_to(images).as_posix() for p in photos[:10])
        if len(keys) >= count:
            break
    keys = keys[:count]
    labels = {name: i for i, name in enumerate(sorted({k.split("/")[0] for k in keys}))}
    entries = {k: {"label": labels[k.split("/")[0]], **BOX} for k in keys}
    list_path = folder / "image_list.json"
    list_path.write_text(json.dumps(entries))
    packing.pack(list_path, images, folder / "pack", packing.PackSettings(shards=16), workers=2)
    return folder / "pack"


def write_jpegs(pack_dir: Path, folder: Path) -> tuple[list[str], list[int]]:
    """The pack's JPEG crops (the very bytes packed) as individual files, and their labels."""
    import tensorflow as tf

    folder.mkdir()
    files, labels = [], []
    feature = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/label": tf.io.FixedLenFeature([], tf.int64),
    }
    records = tf.data.TFRecordDataset(sorted(str(p) for p in pack_dir.glob("*.tfrecord")))
    for i, record in enumerate(records):
        example = tf.io.parse_single_example(record, feature)
        path = folder / f"{i:06d}.jpg"
        path.write_bytes(example["image/encoded"].numpy())
        files.append(str(path))
        labels.append(int(example["image/label"]))
    return files, labels


def raw_dataset(files: list[str], labels: list[int], batch_size: int, epoch: int):
    """Shuffled (path, label) → read_file + decode_jpeg (AUTOTUNE) → batch → float32, int32."""
    import tensorflow as tf

    def load(path, label):
        return tf.io.decode_jpeg(tf.io.read_file(path), channels=3), label

    pairs = (files, tf.constant(labels, tf.int32))
    dataset = tf.data.Dataset.from_tensor_slices(pairs).shuffle(len(files), seed=epoch)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE)


def measure(make, epochs: int) -> tuple[int, float, float, float]:
    """(images, setup s, streaming s, process CPU s) over ``epochs`` fresh epochs built by ``make``.

    Setup is building the dataset and waiting for its first batch (tracing,
    Python generator start); streaming is the rest of the epoch. The CPU time
    (all of this process's threads) is a load-independent cost per image.
    """
    images, setup, streaming = 0, 0.0, 0.0
    cpu_started = time.process_time()
    for epoch in range(epochs):
        started = time.perf_counter()
        batches = iter(make(epoch))
        images += int(next(batches)[0].shape[0])
        first = time.perf_counter()
        for batch in batches:
            images += int(batch[0].shape[0])
        setup += first - started
        streaming += time.perf_counter() - first
    return images, setup, streaming, time.process_time() - cpu_started


def teardown_seconds(dataset, age: float) -> float:
    """Seconds ``del`` of an iterator over ``dataset.repeat()`` takes once it has lived ``age`` seconds,
    consumed as a training loop would: a batch, then ~50 ms of matrix products (the "step"), again."""
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((384, 384), dtype=np.float32)
    started = time.perf_counter()
    batches = iter(dataset.repeat())
    while time.perf_counter() - started < age:
        next(batches)
        step = time.perf_counter()
        while time.perf_counter() - step < 0.05:
            weights = np.tanh(weights @ weights)
    deleting = time.perf_counter()
    del batches
    return time.perf_counter() - deleting


def autotuned_train_dataset(pipeline, pack_dir: Path, batch: int, autotuned: bool):
    """``pipeline.train_dataset`` as ffem builds it, or with AUTOTUNE parallelism, AUTOTUNE prefetch and
    the autotuner on (TF's defaults, ffem's pipeline before it fixed them)."""
    import tensorflow as tf

    fixed = pipeline.PARALLEL_CALLS, pipeline.PREFETCH_BATCHES, pipeline.AUTOTUNER
    if autotuned:
        pipeline.PARALLEL_CALLS, pipeline.PREFETCH_BATCHES, pipeline.AUTOTUNER = (
            tf.data.AUTOTUNE,
            tf.data.AUTOTUNE,
            True,
        )
    try:
        return pipeline.train_dataset(pack_dir, batch, epoch=0, seed=0)
    finally:
        pipeline.PARALLEL_CALLS, pipeline.PREFETCH_BATCHES, pipeline.AUTOTUNER = fixed


def spread(values: list[float]) -> str:
    """``median [min-max]`` of per-round figures."""
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:4.2f} [{ordered[0]:.2f}-{ordered[-1]:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images and 2 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (2 with --quick)")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--teardown",
        type=float,
        metavar="SECONDS",
        help="only time deleting a training iterator that has lived SECONDS, fixed vs autotuned",
    )
    args = parser.parse_args()
    print(reference_line())
    count = args.images or (1000 if args.quick else 6000)
    rounds = args.rounds or (2 if args.quick else 5)
    reason = realdata.missing_reason(realdata.lfw_root() / "images")
    if reason:
        print(f"skipped: {reason}")
        return
    from ffem_cli.data import pipeline

    batch = args.batch_size
    epochs = max(1, 6000 // count)
    with tempfile.TemporaryDirectory(prefix="ffem-bench-pipeline-") as tmp:
        pack_dir = make_pack(count, Path(tmp))
        files, labels = write_jpegs(pack_dir, Path(tmp) / "jpegs")
        if args.teardown is not None:
            for name, autotuned in (("ffem train_dataset", False), ("same, autotuned as before (TF's defaults)", True)):
                took = teardown_seconds(autotuned_train_dataset(pipeline, pack_dir, batch, autotuned), args.teardown)
                print(f"{name:42s}: deleting its iterator after {args.teardown:.0f} s took {took:6.2f} s")
            return
        augment = pipeline.Augment
        flip_colour = augment(brightness=0.15, contrast=0.2, saturation=0.2)

        def train(option, pk=None):
            return lambda e: pipeline.train_dataset(pack_dir, batch, epoch=e, seed=0, augment=option, pk=pk)

        variants = {
            RAW: lambda e: raw_dataset(files, labels, batch, e),
            "train, default augmentation (flip)": train(True),
            "train, no augmentation": train(False),
            "train, flip + colour jitter": train(flip_colour),
            "train, Augment.strong() (+ crop/scale)": train(augment.strong()),
            f"train, P×K {batch // 4}x4, default augmentation": train(True, (batch // 4, 4)),
            "eval_dataset": lambda e: pipeline.eval_dataset(pack_dir, batch),
        }
        for make in variants.values():  # warm-up: page cache, tracing
            measure(make, 1)
        # Per round and variant: streaming img/s, whole-epoch img/s, CPU us/image.
        rows = {name: [] for name in variants}
        for _ in range(rounds):
            for name, make in variants.items():
                images, setup, streaming, cpu = measure(make, epochs)
                rows[name].append(
                    (images / streaming, images / (setup + streaming), setup / epochs, cpu / images * 1e6)
                )
        print(
            f"{len(files)} LFW crops 112x112, batch {batch}, {epochs} epoch(s) x {rounds} rounds "
            f"interleaved, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
        )
        print(
            f"{'':46s}  streaming img/s | vs raw, per round:  streaming    | whole epochs"
            "         | setup s/epoch | CPU us/img"
        )
        raw = rows[RAW]
        for name, figures in rows.items():
            stream, whole, setup, cpu = (np.median([f[i] for f in figures]) for i in range(4))
            stream_ratio = spread([f[0] / r[0] for f, r in zip(figures, raw, strict=True)])
            whole_ratio = spread([f[1] / r[1] for f, r in zip(figures, raw, strict=True)])
            print(
                f"{name:46s}: {stream:8.0f}        | {stream_ratio} | {whole_ratio} | {setup:.2f}          | {cpu:4.0f}"
            )
        print("goal: training mode >= 0.80 of raw")


if __name__ == "__main__":
    main()
