"""Benchmark: reading an insightface ``.bin`` safely costs little next to plain ``pickle.loads``.

Builds an LFW-sized ``.bin`` (6,000 pairs = 12,000 distinct JPEG byte strings
of 112x112 faces cut from real LFW images, protocol 4 as insightface writes
with Python 3) and times, in one run:

- ``pickle.loads`` (unsafe: what insightface does) vs ``binset.restricted_loads``
  (opcode scan + whitelisted globals) on the same bytes: the ratio is the
  price of safety;
- ``binset.decode_faces`` (PIL decode of every face) in images/s;
- the reference rate: ``bench/pack.py``'s plain PIL decode+crop+encode loop,
  so figures from different machines can be compared.

    .venv/bin/python bench/binset.py            # 6,000 pairs
    .venv/bin/python bench/binset.py --quick    # 1,000 pairs
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from pack import BOX, ceiling_rate, lfw_sample  # noqa: E402
from PIL import Image  # noqa: E402

from ffem_cli import realdata  # noqa: E402
from ffem_cli.data.crop import square_around_box  # noqa: E402
from ffem_cli.evaluate.binset import BinSet, decode_faces, restricted_loads  # noqa: E402


def faces_from_lfw(root: Path, keys: list[str]) -> list[bytes]:
    region = square_around_box(BOX, 0.0)
    encoded = []
    for key in keys:
        with Image.open(root / key) as image:
            face = image.convert("RGB").resize((112, 112), Image.BILINEAR, box=region)
        buffer = io.BytesIO()
        face.save(buffer, format="JPEG", quality=95)
        encoded.append(buffer.getvalue())
    return encoded


def best_of(runs: int, work) -> float:
    """The shortest wall time of ``runs`` calls, seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 pairs instead of 6,000")
    args = parser.parse_args()
    root = realdata.lfw_root() / "images"
    reason = realdata.missing_reason(root)
    if reason:
        print(f"skipped: {reason}")
        return
    pairs = 1000 if args.quick else 6000
    keys = lfw_sample(min(2 * pairs, 2000))
    faces = faces_from_lfw(root, keys)
    images = [bytes(bytearray(faces[i % len(faces)])) for i in range(2 * pairs)]  # distinct objects
    issame = [i % 2 == 0 for i in range(pairs)]
    data = pickle.dumps((images, issame), protocol=4)
    plain = best_of(3, lambda: pickle.loads(data))
    safe = best_of(3, lambda: restricted_loads(data))
    binset = BinSet(Path("bench.bin"), images, np.asarray(issame))
    decode = best_of(1, lambda: decode_faces(binset, 112))
    reference = ceiling_rate(root, keys[:300])
    print(f".bin of {pairs} pairs, {len(data) / 2**20:.1f} MiB")
    print(f"pickle.loads (unsafe):      {plain * 1000:8.1f} ms")
    print(f"restricted_loads:           {safe * 1000:8.1f} ms  ({safe / plain:.1f}x pickle.loads)")
    print(f"decode_faces:               {2 * pairs / decode:8.0f} faces/s")
    print(f"reference PIL loop (pack):  {reference:8.0f} img/s")


if __name__ == "__main__":
    main()
