"""Benchmark: ffem's batched detect vs a one-image-at-a-time MTCNN loop on the same LFW images.

Both sides decode the JPEGs and run the same MTCNN instance (built once,
warmed up, not timed), in the same process, one after the other:

- loop:  ``read_rgb(path)`` then ``MTCNN().detect_faces(image)`` per image
  (the package's defaults: min face 20 px, thresholds 0.6/0.7/0.8).
- ffem:  ``data.detect.detect_folder`` with the CLI defaults (batch 16,
  same size and thresholds), which also writes its list and rejects files.

It prints both rates, their ratio (goal: ffem >= 2x the loop), the decode
rate alone, and how often the two agree on the kept face (IoU > 0.5).

Then ``ffem eval folder --detect`` (``evaluate.folder.evaluate_folder`` with
``--detect``, no cache, a tiny untrained 112 px embedder so that the model's
own cost stays small) runs on the same images with the same warmed MTCNN:
its images/s beside ``ffem detect``'s (goal >= 0.8), and how often both keep
the same face.

    .venv/bin/python bench/detect.py            # 200 images
    .venv/bin/python bench/detect.py --quick    # 48 images
"""

from __future__ import annotations

import argparse
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
from ffem_cli.data import detect  # noqa: E402
from ffem_cli.data.image_list import load_image_list  # noqa: E402
from ffem_cli.images import read_rgb  # noqa: E402


def lfw_sample(count: int) -> list[Path]:
    """``count`` LFW images spread over the sorted list (deterministic)."""
    paths = sorted((realdata.lfw_root() / "images").glob("*/*.jpg"))
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48 images instead of 200")
    parser.add_argument("--images", type=int, default=None, help="number of LFW images")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    print(reference_line())
    count = args.images or (48 if args.quick else 200)

    reason = realdata.missing_reason(realdata.lfw_root() / "images")
    if reason:
        print(f"skipped: {reason}")
        return
    paths = lfw_sample(count)
    options = detect.DetectOptions(batch_size=args.batch_size)

    started = time.perf_counter()
    from ffem_cli.inference.detection import shared_detector

    detector = shared_detector()  # the MTCNN that ffem eval --detect uses too
    warm = read_rgb(paths[0])
    detector.detect_faces(warm)
    detect.detect_batch(detector, [warm] * min(options.batch_size, 4), options)
    print(f"{len(paths)} LFW images, MTCNN ready in {time.perf_counter() - started:.1f} s (not timed below)")

    started = time.perf_counter()
    images = [read_rgb(path) for path in paths]
    decode_seconds = time.perf_counter() - started
    del images

    started = time.perf_counter()
    loop_boxes = {}
    for path in paths:
        faces = detector.detect_faces(read_rgb(path))
        if faces:
            best = max(faces, key=lambda f: f["box"][2] * f["box"][3] * f["confidence"])
            x, y, w, h = best["box"]
            loop_boxes[f"{path.parent.name}/{path.name}"] = (x, y, x + w, y + h)
    loop_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        for path in paths:
            (root / path.parent.name).mkdir(parents=True, exist_ok=True)
            (root / path.parent.name / path.name).symlink_to(path)
        output = Path(tmp) / "image_list.json"
        summary = detect.detect_folder(root, output, options, detector=detector)
        entries = load_image_list(output)
    ffem_seconds = summary.seconds

    agree = sum(1 for rel, box in loop_boxes.items() if rel in entries and iou(entries[rel].box, box) > 0.5)
    loop_rate, ffem_rate = len(paths) / loop_seconds, len(paths) / ffem_seconds
    print(f"decode only (PIL, 1 thread):         {len(paths) / decode_seconds:8.1f} images/s")
    print(
        f"one-image loop MTCNN.detect_faces:   {loop_rate:8.1f} images/s ({loop_seconds:.1f} s, {len(loop_boxes)} with a face)"
    )
    print(
        f"ffem detect (batch {options.batch_size}, {options.workers} decode threads): {ffem_rate:8.1f} images/s "
        f"({ffem_seconds:.1f} s, {summary.kept} kept, rejected {dict(summary.rejected)}, {summary.extra_faces} extra faces)"
    )
    print(f"ratio ffem / loop: {ffem_rate / loop_rate:.2f}x (goal >= 2x)")
    print(f"same kept face (IoU > 0.5): {agree} of {len(loop_boxes)} images the loop found a face in")
    bench_eval_detect(paths, detector, ffem_rate, entries)


def bench_eval_detect(paths: list[Path], detector, detect_rate: float, entries: dict) -> None:
    """``ffem eval folder --detect`` on the same images and MTCNN, beside ``ffem detect``'s rate."""
    import keras

    from ffem_cli.evaluate.folder import evaluate_folder
    from ffem_cli.inference import detection
    from ffem_cli.inference.embedding import Embedder, FacePrep
    from ffem_cli.models import build_embedder

    assert detection.shared_detector() is detector  # the warmed MTCNN that ffem detect got
    keras.utils.set_random_seed(0)
    model = build_embedder("tiny", pooling="gap", embedding_size=128, input_size=112)
    model.predict_on_batch(np.zeros((64, 112, 112, 3), np.float32))  # warm up, not timed
    embedder = Embedder(model, "bench", FacePrep(image_size=112, detect=True), "tiny untrained embedder")
    kept = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        for path in paths:
            (root / path.parent.name).mkdir(parents=True, exist_ok=True)
            (root / path.parent.name / path.name).symlink_to(path)
        started = time.perf_counter()
        report = evaluate_folder(embedder, root, Path(tmp) / "report", cache_dir=None)
        seconds = time.perf_counter() - started
        for index, _image, found in detection.detect_images([root / rel for rel in entries], detector=detector):
            if found is not None:
                kept[list(entries)[index]] = found[0]
    rate = len(paths) / seconds
    same = sum(1 for rel, box in kept.items() if tuple(box) == tuple(entries[rel].box))
    print(f"ffem eval folder --detect (tiny embedder): {rate:8.1f} images/s ({seconds:.1f} s, "
          f"{report['images'] - report['images_without_face']} with a face)")  # fmt: skip
    print(f"ratio eval --detect / ffem detect: {rate / detect_rate:.2f} (goal >= 0.8); "
          f"same box as ffem detect's list: {same} of {len(entries)}")  # fmt: skip


if __name__ == "__main__":
    main()
