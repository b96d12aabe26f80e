"""Benchmark: ``ffem pack`` images/s with 1 and 2 workers vs the machine's JPEG decode+encode rate.

On the same LFW images (250x250 deep-funneled, box = the middle 125x125), in
one run:

- ceiling: a plain single-process loop — PIL decode, crop the margin square
  and resize to 112 (``Image.resize`` with a box), JPEG encode at quality 95 —
  nothing else. Twice its rate is the 2-core ceiling.
- ``data.pack.pack`` with 1 and 2 workers, 16 shards: the whole call
  (validation of list and image headers, worker start-up, crop, encode,
  TFRecord framing, sha256, fsync, manifest).
- writer: the pure-Python TFRecord framing (CRC32C from google-crc32c)
  against ``tf.io.TFRecordWriter`` on the same already-encoded examples.

Goals: 2 workers >= 1.7x 1 worker; 2 workers >= 0.8 of the 2-core ceiling.

On a shared machine two processes rarely get two whole cores, so the same
plain loop is also run in two processes at once (halves of the list) and
its measured rate printed: that is what the machine gave at that moment.

    .venv/bin/python bench/pack.py            # 2,000 images
    .venv/bin/python bench/pack.py --quick    # 300 images
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from PIL import Image  # noqa: E402

from bench.reference import BOX, plain_loop, reference_line  # noqa: E402
from ffem_cli import realdata  # noqa: E402
from ffem_cli.data import pack as packing  # noqa: E402
from ffem_cli.data.crop import square_around_box  # noqa: E402


def lfw_sample(count: int) -> list[str]:
    """``count`` LFW image keys (``Name/Name_0001.jpg``), spread over the sorted list."""
    images = realdata.lfw_root() / "images"
    paths = sorted(images.glob("*/*.jpg"))
    step = max(1, len(paths) // count)
    return [p.relative_to(images).as_posix() for p in paths[::step][:count]]


def write_list(keys: list[str], folder: Path) -> Path:
    names = sorted({key.split("/")[0] for key in keys})
    labels = {name: i for i, name in enumerate(names)}
    x1, y1, x2, y2 = BOX
    entries = {
        k: {"label": labels[k.split("/")[0]], "x1": x1, "y1": y1, "x2": x2, "y2": y2} for k in keys
    }
    path = folder / "image_list.json"
    path.write_text(json.dumps(entries))
    return path


def ceiling_rate(root: Path, keys: list[str]) -> float:
    """Single-process images/s of decode + crop/resize + encode with plain PIL (the reference loop)."""
    return len(keys) / plain_loop([root / key for key in keys], len(keys))


def _ceiling_half(args) -> float:
    root, keys = args
    return ceiling_rate(root, keys)


def two_process_rate(root: Path, keys: list[str]) -> float:
    """Images/s of the plain loop run in two processes at once, over wall time."""
    import multiprocessing

    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_ceiling_half, [(root, keys[0::2]), (root, keys[1::2])])
    return len(keys) / (time.perf_counter() - started)


def pack_rate(list_path: Path, root: Path, output: Path, workers: int) -> float:
    started = time.perf_counter()
    result = packing.pack(list_path, root, output, packing.PackSettings(shards=16), workers=workers)
    return result.images / (time.perf_counter() - started)


def writer_rates(root: Path, keys: list[str], folder: Path) -> tuple[float, float]:
    """Records/s of the pure-Python writer and of tf.io.TFRecordWriter on the same examples."""
    import tensorflow as tf

    settings = packing.PackSettings()
    payloads = []
    for key in keys:
        with Image.open(root / key) as image:
            face = image.convert("RGB").resize(
                (112, 112), Image.BILINEAR, box=square_around_box(BOX, 0.2)
            )
        buffer = io.BytesIO()
        face.save(buffer, format="JPEG", quality=settings.jpeg_quality)
        payloads.append(packing.encode_example(buffer.getvalue(), 0, key))
    started = time.perf_counter()
    with open(folder / "python.tfrecord", "wb") as handle:
        for payload in payloads:
            handle.write(packing.tfrecord_frame(payload))
    python_rate = len(payloads) / (time.perf_counter() - started)
    started = time.perf_counter()
    with tf.io.TFRecordWriter(str(folder / "tf.tfrecord")) as writer:
        for payload in payloads:
            writer.write(payload)
    tf_rate = len(payloads) / (time.perf_counter() - started)
    same = (folder / "python.tfrecord").read_bytes() == (folder / "tf.tfrecord").read_bytes()
    print(f"  (byte-identical files: {same})")
    return python_rate, tf_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 images instead of 2,000")
    parser.add_argument("--images", type=int, default=None, help="number of LFW images")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (3; quick 2)")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    count = args.images or (300 if args.quick else 2000)
    reason = realdata.missing_reason(realdata.lfw_root() / "images")
    if reason:
        print(f"skipped: {reason}")
        return
    root = realdata.lfw_root() / "images"
    keys = lfw_sample(count)
    print(f"{len(keys)} LFW images, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(reference_line())
    with tempfile.TemporaryDirectory(prefix="ffem-bench-pack-") as tmp:
        folder = Path(tmp)
        list_path = write_list(keys, folder)
        for key in keys:  # warm the page cache so every variant reads from memory
            (root / key).read_bytes()
        best = {"plain": 0.0, "one": 0.0, "two": 0.0, "plain2": 0.0}
        for round_number in range(args.rounds):  # alternate, keep each variant's best round
            best["plain"] = max(best["plain"], ceiling_rate(root, keys))
            best["one"] = max(
                best["one"], pack_rate(list_path, root, folder / f"w1-{round_number}", 1)
            )
            best["plain2"] = max(best["plain2"], two_process_rate(root, keys))
            best["two"] = max(
                best["two"], pack_rate(list_path, root, folder / f"w2-{round_number}", 2)
            )
        ceiling, one, two, measured_two = best["plain"], best["one"], best["two"], best["plain2"]
        print(
            f"best of {args.rounds} alternating rounds; load average now {os.getloadavg()[0]:.2f}"
        )
        print(f"PIL decode+crop+encode, 1 process  : {ceiling:8.1f} img/s")
        print(f"2-core ceiling (2x that)           : {2 * ceiling:8.1f} img/s")
        print(f"ffem pack, 1 worker                : {one:8.1f} img/s")
        print(f"ffem pack, 2 workers               : {two:8.1f} img/s")
        print(f"2 workers / 1 worker               : {two / one:8.2f}   (goal >= 1.7)")
        print(f"2 workers / 2-core ceiling         : {two / (2 * ceiling):8.2f}   (goal >= 0.8)")
        print(f"plain loop in 2 processes, measured: {measured_two:8.1f} img/s")
        print(f"2 workers / measured 2-process rate: {two / measured_two:8.2f}")
        python_rate, tf_rate = writer_rates(root, keys, folder)
        print(f"TFRecord framing, pure Python      : {python_rate:8.0f} records/s")
        print(f"TFRecord framing, tf.io writer     : {tf_rate:8.0f} records/s")


if __name__ == "__main__":
    main()
