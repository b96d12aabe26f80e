"""The reference loop every benchmark prints beside its figures, so they travel between machines.

The loop is plain single-process PIL: decode a 250x250 LFW JPEG, crop the
square 0.2 beyond the box ``BOX`` and resize it to 112 px (bilinear), encode
it at JPEG quality 95 — nothing else (it is ``bench/pack.py``'s ceiling).
Machines of the same kind differ ~3x in speed; a figure measured alongside
this rate can be rescaled to another machine by the ratio of the two rates.
Without LFW the loop runs on one synthetic 250x250 JPEG (smooth gradients
plus noise; same work per image, a different photo: the printout says which).

    from bench.reference import reference_line   # with the repository root on sys.path
    print(reference_line())
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ffem_cli import realdata  # noqa: E402
from ffem_cli.data.crop import square_around_box  # noqa: E402

BOX = (62, 62, 187, 187)  # the middle 125x125 of a 250x250 LFW image
SAMPLE = 200  # distinct images read into memory once


def plain_loop(images: list[bytes | Path], count: int) -> float:
    """Seconds to decode, crop+resize to 112 and re-encode ``count`` images cycling over ``images``
    (encoded JPEG bytes in memory, or files)."""
    region = square_around_box(BOX, 0.2)
    started = time.perf_counter()
    for index in range(count):
        item = images[index % len(images)]
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as image:
            face = image.convert("RGB").resize((112, 112), Image.BILINEAR, box=region)
        face.save(io.BytesIO(), format="JPEG", quality=95)
    return time.perf_counter() - started


def sample_images() -> tuple[list[bytes], str]:
    """Up to ``SAMPLE`` JPEG files as bytes (LFW, spread over the sorted list) and where they came from."""
    images = realdata.lfw_root() / "images"
    if realdata.missing_reason(images) is None:
        paths = sorted(images.glob("*/*.jpg"))
        if paths:
            step = max(1, len(paths) // SAMPLE)
            return [path.read_bytes() for path in paths[::step][:SAMPLE]], "LFW"
    import numpy as np

    x, y = np.meshgrid(np.linspace(0, 255, 250), np.linspace(0, 255, 250))
    pixels = np.stack([x, y, np.full_like(x, 128)], axis=-1) + np.random.default_rng(0).normal(0, 20, (250, 250, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return [buffer.getvalue()], "synthetic image (no LFW)"


def reference_rate(seconds: float = 2.0) -> tuple[float, str]:
    """Images/s of the plain loop over about ``seconds`` (best of short rounds) and the images' source."""
    encoded, source = sample_images()
    per_round = 50
    best, spent = 0.0, 0.0
    while spent < seconds:
        elapsed = plain_loop(encoded, per_round)
        spent += elapsed
        best = max(best, per_round / elapsed)
    return best, source


def reference_line(seconds: float = 2.0) -> str:
    """One line for a benchmark's printout: the reference rate, its images, CPUs and load."""
    rate, source = reference_rate(seconds)
    return (
        f"reference loop (plain PIL decode+crop+encode, 1 process, {source}): {rate:,.0f} img/s; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
