"""Benchmark: training-mode images/s from packed shards vs raw tf.data decode of the same JPEGs.

LFW images are packed (112x112 margin crops, 16 shards); the very same JPEG
crops are also written out as one file each. In the same process:

- raw:   ``tf.data`` over the files: shuffle names, ``read_file`` +
         ``decode_jpeg`` (AUTOTUNE), batch, cast to float32, prefetch — the
         least a JPEG training input can do.
- train: ``data.pipeline.train_dataset`` (interleaved shards, shuffle buffer,
         per-image parse + decode (+ crop/colour), per-batch flip + cast, prefetch) with the
         default augmentation (flip), none, flip + colour jitter,
         ``Augment.strong()`` (flip + crop/scale + colour), and P×K batches.
- eval:  ``data.pipeline.eval_dataset``.

Each variant is iterated for whole epochs after a warm-up epoch; variants
alternate over rounds (the machine is shared) and the rates are totals over
all rounds; each round's rate is also divided by raw's in that round (the
shared machine's load shifts between rounds, less within one), and the
median and range of those ratios are printed.
Goal: training mode (default augmentation) >= 0.8 of raw.

    .venv/bin/python bench/pipeline.py            # 6,000 images, 3 rounds
    .venv/bin/python bench/pipeline.py --quick    # 1,000 images, 2 rounds

Epochs are rebuilt as the trainer does (one ``train_dataset`` per epoch), so
each starts with an empty shuffle buffer and AUTOTUNE ramping up; with
small epochs that start-up weighs heavily, hence the separate columns.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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


def write_jpegs(pack_dir: Path, folder: Path) -> list[str]:
    """The pack's JPEG crops as individual files (the raw baseline reads these)."""
    import tensorflow as tf

    folder.mkdir()
    files = []
    feature = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    records = tf.data.TFRecordDataset(sorted(str(p) for p in pack_dir.glob("*.tfrecord")))
    for i, record in enumerate(records):
        path = folder / f"{i:06d}.jpg"
        path.write_bytes(tf.io.parse_single_example(record, feature)["image/encoded"].numpy())
        files.append(str(path))
    return files


def raw_dataset(files: list[str], batch_size: int, epoch: int):
    import tensorflow as tf

    def load(path):
        return tf.io.decode_jpeg(tf.io.read_file(path), channels=3)

    dataset = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=epoch)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.map(lambda x: tf.cast(x, tf.float32)).prefetch(tf.data.AUTOTUNE)


def measure(make, epochs: int) -> tuple[int, float, float]:
    """(images, setup seconds, streaming seconds) over ``epochs`` fresh epochs built by ``make``.

    Setup is building the dataset and waiting for its first batch (tracing,
    shuffle-buffer fill); streaming is the rest of the epoch.
    """
    images, setup, streaming = 0, 0.0, 0.0
    for epoch in range(epochs):
        started = time.perf_counter()
        batches = iter(make(epoch))
        images += int(next(batches)[0].shape[0])
        first = time.perf_counter()
        for batch in batches:
            images += int(batch[0].shape[0])
        setup += first - started
        streaming += time.perf_counter() - first
    return images, setup, streaming


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images and 2 rounds")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    count = args.images or (1000 if args.quick else 6000)
    rounds = 2 if args.quick else 3
    reason = realdata.missing_reason(realdata.lfw_root() / "images")
    if reason:
        print(f"skipped: {reason}")
        return
    from ffem_cli.data import pipeline

    batch = args.batch_size
    epochs = max(1, 6000 // count)
    with tempfile.TemporaryDirectory(prefix="ffem-bench-pipeline-") as tmp:
        pack_dir = make_pack(count, Path(tmp))
        files = write_jpegs(pack_dir, Path(tmp) / "jpegs")
        augment = pipeline.Augment
        flip_colour = augment(brightness=0.15, contrast=0.2, saturation=0.2)

        def train(option, pk=None):
            return lambda e: pipeline.train_dataset(
                pack_dir, batch, epoch=e, seed=0, augment=option, pk=pk
            )

        variants = {
            RAW: lambda e: raw_dataset(files, batch, e),
            "train, default augmentation (flip)": train(True),
            "train, no augmentation": train(False),
            "train, flip + colour jitter": train(flip_colour),
            "train, Augment.strong() (+ crop/scale)": train(augment.strong()),
            f"train, P×K {batch // 4}x4, default augmentation": train(True, (batch // 4, 4)),
            "eval_dataset": lambda e: pipeline.eval_dataset(pack_dir, batch),
        }
        for make in variants.values():  # warm-up: page cache, tracing
            measure(make, 1)
        totals = {name: [0, 0.0, 0.0] for name in variants}
        ratios = {name: [] for name in variants}  # per round, streaming rate / raw's
        for _ in range(rounds):
            rates = {}
            for name, make in variants.items():
                images, setup, streaming = measure(make, epochs)
                rates[name] = images / streaming
                for i, value in enumerate((images, setup, streaming)):
                    totals[name][i] += value
            for name in variants:
                ratios[name].append(rates[name] / rates[RAW])
        print(
            f"{len(files)} LFW crops 112x112, batch {batch}, {epochs} epoch(s) x {rounds} rounds "
            f"interleaved, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
        )
        raw_images, raw_setup, raw_stream = totals[RAW]
        raw_stream_rate = raw_images / raw_stream
        raw_epoch_rate = raw_images / (raw_setup + raw_stream)
        print(
            f"{'':46s}  streaming img/s (vs raw) | whole epochs img/s (vs raw) | setup s/epoch"
            " | per-round streaming ratio: median [min-max]"
        )
        for name, (images, setup, streaming) in totals.items():
            stream_rate, epoch_rate = images / streaming, images / (setup + streaming)
            spread = sorted(ratios[name])
            print(
                f"{name:46s}: {stream_rate:8.0f} ({stream_rate / raw_stream_rate:4.2f})"
                f"          | {epoch_rate:8.0f} ({epoch_rate / raw_epoch_rate:4.2f})"
                f"            | {setup / (rounds * epochs):.2f}"
                f"          | {spread[len(spread) // 2]:4.2f} [{spread[0]:.2f}-{spread[-1]:.2f}]"
            )
        print("goal: training mode >= 0.80 of raw")


if __name__ == "__main__":
    main()
