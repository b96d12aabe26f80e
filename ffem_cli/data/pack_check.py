"""Is a pack what its manifest says? The checks ``ffem train`` runs before the first step.

Every reader gets the field checks of ``PackDir.manifest()`` (types and
ranges, shard names that stay inside the pack) and of ``PackDir.index()``
(``index.npz`` holds four integer arrays of ``num_examples`` rows, shard
numbers point at listed shards, labels lie in ``[0, num_classes)``, each
shard holds the count the manifest gives it); see ``data.packdir``.

``check_pack`` (``ffem train`` at start, cheap: milliseconds per shard):
the above, the index's sha256 against the manifest, every shard's size
against the TFRecord framing the index implies (records back to back, 16
framing bytes each), and a sample of records (the first and last of each
shard plus up to ``SAMPLE`` spread over the pack) read back: length field,
both CRC32Cs, and the label stored in the record against the index's.
``full=True`` (``ffem train --verify``) also compares every shard's sha256
with the manifest, which reads the whole pack.

Any mismatch is one ``FfemError`` line naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffem_cli.data.packdir import PackDir, corrupted
from ffem_cli.hashing import file_sha256

SAMPLE = 64  # records read back at start, besides each shard's first and last
FRAMING = 16  # TFRecord bytes around a payload: length u64, its CRC u32, then the payload's CRC u32


def check_pack(pack: PackDir | str | Path, full: bool = False) -> dict:
    """Every check of the module docstring; returns the manifest. ``full``: sha256 of every shard."""
    pack = PackDir.of(pack)
    manifest = pack.manifest()
    recorded = manifest.get("index", {})
    recorded = recorded.get("sha256") if isinstance(recorded, dict) else None
    if recorded and file_sha256(pack.index_path) != recorded:
        raise corrupted(pack.index_path, "its sha256 differs from the manifest's")
    index = pack.index()
    rows_of = _rows_by_shard(index["shard"], len(manifest["shards"]))
    for path, rows in zip(pack.shard_paths, rows_of, strict=True):
        _check_framing(path, index["offset"][rows], index["length"][rows])
    _check_sample(pack.shard_paths, index, rows_of)
    if full:
        for path, shard in zip(pack.shard_paths, manifest["shards"], strict=True):
            if file_sha256(path) != shard.get("sha256"):
                raise corrupted(path, "its sha256 differs from the manifest's")
    return manifest


def _rows_by_shard(shards: np.ndarray, count: int) -> list[np.ndarray]:
    """Index rows of each shard, in index order (one stable sort, not a scan per shard)."""
    order = np.argsort(shards, kind="stable")
    return np.split(order, np.cumsum(np.bincount(shards, minlength=count))[:-1])


def _check_framing(path: Path, offsets: np.ndarray, lengths: np.ndarray) -> None:
    """The shard's records lie back to back at the index's offsets and fill the file exactly."""
    expected = np.cumsum(np.concatenate([[0], lengths + FRAMING]))  # record starts, then the end
    if not np.array_equal(offsets, expected[:-1] + 12):
        raise corrupted(path, "the index's record offsets do not follow each other")
    size = path.stat().st_size
    if size != int(expected[-1]):
        raise corrupted(path, f"{size} bytes, the index implies {int(expected[-1])} (truncated or overwritten)")


def _check_sample(files: list[Path], index: dict[str, np.ndarray], rows_of: list[np.ndarray]) -> None:
    """Read back the first and last record of each shard and ``SAMPLE`` spread over the pack."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    from ffem_cli.data.tfrecord import FrameError, read_frame

    count = len(index["label"])
    if not count:
        return
    ends = [rows[[0, -1]] for rows in rows_of if len(rows)]
    chosen = np.unique(np.concatenate([*ends, np.linspace(0, count - 1, min(SAMPLE, count)).astype(int)]))
    for row in chosen.tolist():
        path = files[int(index["shard"][row])]
        offset, length = int(index["offset"][row]), int(index["length"][row])
        where = f"{path} record at byte {offset - 12}"
        try:
            with open(path, "rb") as handle:
                found = read_frame(handle, offset - 12)
        except FrameError:
            found = None
        if found is None or len(found[0]) != length:
            raise corrupted(where, "bad length or CRC32C")
        payload = found[0]
        try:
            feature = tf.train.Example.FromString(payload).features.feature
            label = feature["image/label"].int64_list.value[0]
        except (DecodeError, IndexError) as exc:  # not an Example, or one without a label
            raise corrupted(where, f"not a face record ({type(exc).__name__})") from None
        if label != index["label"][row]:
            raise corrupted(where, f"label {label}, the index says {index['label'][row]}")
