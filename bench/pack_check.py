"""Benchmark: what the pack check costs at the start of ``ffem train``, cheap (default) vs ``--verify``.

A pack of N synthetic records (each a real ``tf.train.Example`` with a
random payload of ``--bytes`` bytes standing in for the JPEG, the size of a
112x112 face at quality 95) is written in 64 shards with a manifest and an
index exactly as ``ffem pack`` writes them. Then, in the same process:

- cheap:  ``pack_check.check_pack(pack)`` (manifest, index sha256 and
          ranges, every shard's size against its framing, 64 + 2 per shard
          records read back);
- verify: ``check_pack(pack, full=True)`` (adds every shard's sha256);
- read:   the reference: reading every shard's bytes once (what any full
          check must at least do).

The median of ``--rounds`` timings is printed for each, with records/s and
the ratio of cheap to verify. The page cache is warm after the first round,
so verify and read are the best case; cold disks make them slower, not cheap.

    .venv/bin/python bench/pack_check.py              # 200,000 records
    .venv/bin/python bench/pack_check.py --quick      # 20,000 records
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reference import reference_line  # noqa: E402
from ffem_cli.data import pack_check  # noqa: E402
from ffem_cli.data.pack import tfrecord_frame  # noqa: E402
from ffem_cli.data.packdir import PackDir, shard_name  # noqa: E402
from ffem_cli.hashing import file_sha256  # noqa: E402

SHARDS = 64


def write_pack(folder: Path, records: int, payload_bytes: int, classes: int = 1000) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, records)
    columns = {"shard": [], "offset": [], "length": [], "label": []}
    shards = []
    for number, rows in enumerate(np.array_split(np.arange(records), SHARDS)):
        name = shard_name(number, SHARDS)
        position = 0
        with open(folder / name, "wb") as handle:
            for row in rows:
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "image/encoded": tf.train.Feature(
                                bytes_list=tf.train.BytesList(value=[rng.bytes(payload_bytes)])
                            ),
                            "image/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[row])])),
                            "image/path": tf.train.Feature(
                                bytes_list=tf.train.BytesList(value=[f"{row}.jpg".encode()])
                            ),
                        }
                    )
                ).SerializeToString()
                handle.write(tfrecord_frame(example))
                for key, value in (
                    ("shard", number),
                    ("offset", position + 12),
                    ("length", len(example)),
                    ("label", int(labels[row])),
                ):
                    columns[key].append(value)
                position += len(example) + 16
        shards.append({"file": name, "count": len(rows), "sha256": file_sha256(folder / name)})
    pack = PackDir(folder)
    np.savez(
        pack.index_path,
        shard=np.asarray(columns["shard"], np.int32),
        offset=np.asarray(columns["offset"], np.int64),
        length=np.asarray(columns["length"], np.int64),
        label=np.asarray(columns["label"], np.int32),
    )
    manifest = {
        "image_size": 112,
        "crop": "margin",
        "margin": 0.2,
        "num_examples": records,
        "num_classes": classes,
        "shards": shards,
        "index": {"file": pack.index_path.name, "sha256": file_sha256(pack.index_path)},
    }
    pack.manifest_path.write_text(json.dumps(manifest))


def read_all(folder: Path) -> None:
    for shard in sorted(folder.glob("*.tfrecord")):
        with open(shard, "rb") as handle:
            while handle.read(1 << 20):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--bytes", type=int, default=4_000, help="payload per record (a 112 px JPEG face)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 records")
    args = parser.parse_args()
    records = 20_000 if args.quick else args.records
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        write_pack(folder, records, args.bytes)
        size = sum(p.stat().st_size for p in folder.glob("*.tfrecord")) / 1e6
        timings = {"cheap": [], "verify": [], "read": []}
        for _ in range(args.rounds):
            for name, run in (
                ("cheap", lambda: pack_check.check_pack(folder)),
                ("verify", lambda: pack_check.check_pack(folder, full=True)),
                ("read", lambda: read_all(folder)),
            ):
                started = time.perf_counter()
                run()
                timings[name].append(time.perf_counter() - started)
    print(f"pack: {records:,} records, {SHARDS} shards, {size:,.0f} MB; median of {args.rounds} rounds")
    print(reference_line())
    for name, values in timings.items():
        seconds = statistics.median(values)
        print(f"  {name:6s} {seconds:8.3f} s  {records / seconds:12,.0f} records/s")
    print(f"  cheap / verify time: {statistics.median(timings['cheap']) / statistics.median(timings['verify']):.3f}")


if __name__ == "__main__":
    main()
