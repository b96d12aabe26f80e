"""Is a pack what its manifest says? The checks ``ffem train`` runs before the first step.

``check_manifest_fields`` (every reader, via ``pipeline.read_manifest``): the
fields a reader uses have the right types and ranges, and shard names are
plain file names inside the pack.

``check_index`` (every reader, via ``pipeline._load_index``): ``index.npz``
holds four integer arrays of ``num_examples`` rows, shard numbers point at
listed shards, labels lie in ``[0, num_classes)`` and each shard holds the
count the manifest gives it.

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

from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256

SAMPLE = 64  # records read back at start, besides each shard's first and last
FRAMING = 16  # TFRecord bytes around a payload: length u64, its CRC u32, then the payload's CRC u32
INDEX_KEYS = ("shard", "offset", "length", "label")
_HINT = "re-run ffem pack"


def corrupted(where, what: str) -> FfemError:
    return FfemError(f"{where}: corrupted pack: {what}; {_HINT}")


def check_manifest_fields(manifest: dict, path: Path) -> None:
    """Types and ranges of the manifest fields readers use; shard names stay inside the pack."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise FfemError(f"{path}: malformed manifest ({what})")

    def count(name: str, low: int) -> None:
        value = manifest[name]
        need(type(value) is int and value >= low, f"{name} must be an integer >= {low}, got {value!r}")

    count("image_size", 1)
    count("num_examples", 0)
    count("num_classes", 1)
    need(manifest["crop"] in ("margin", "align"), f"crop must be 'margin' or 'align', got {manifest['crop']!r}")
    margin = manifest.get("margin", 0.0)
    need(type(margin) in (int, float) and np.isfinite(margin), f"margin must be a number, got {margin!r}")
    shards = manifest["shards"]
    need(isinstance(shards, list) and shards, "shards must be a non-empty list")
    for shard in shards:
        need(isinstance(shard, dict), f"a shard entry must be an object, got {shard!r}")
        name = shard.get("file")
        need(isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name,
             f"shard file must be a plain file name in the pack, got {name!r}")
        need(type(shard.get("count")) is int and shard["count"] >= 0,
             f"shard {name} count must be an integer >= 0, got {shard.get('count')!r}")
        need(isinstance(shard.get("sha256", ""), str), f"shard {name} sha256 must be a string")
    need(sum(s["count"] for s in shards) == manifest["num_examples"],
         f"the shard counts add up to {sum(s['count'] for s in shards)}, "
         f"not num_examples = {manifest['num_examples']}")


def check_index(index: dict[str, np.ndarray], manifest: dict, path: Path) -> None:
    """``index.npz`` agrees with the manifest (shapes, dtypes, shard numbers, label range, counts)."""
    rows = manifest["num_examples"]
    for key in INDEX_KEYS:
        array = index[key]
        if array.ndim != 1 or len(array) != rows or not np.issubdtype(array.dtype, np.integer):
            raise corrupted(path, f"'{key}' must be {rows} integers, got {array.dtype} {array.shape}")
    shards = manifest["shards"]
    if rows and (index["shard"].min() < 0 or index["shard"].max() >= len(shards)):
        raise corrupted(path, f"shard numbers outside 0..{len(shards) - 1}")
    labels = index["label"]
    if rows and (labels.min() < 0 or labels.max() >= manifest["num_classes"]):
        bad = labels[(labels < 0) | (labels >= manifest["num_classes"])][0]
        raise corrupted(path, f"label {bad} is outside 0..{manifest['num_classes'] - 1} (num_classes)")
    if (index["offset"] < 0).any() or (index["length"] < 0).any():
        raise corrupted(path, "negative record offsets or lengths")
    counts = np.bincount(index["shard"], minlength=len(shards))
    for shard, held in zip(shards, counts.tolist(), strict=True):
        if held != shard["count"]:
            raise corrupted(path, f"{held} records of {shard['file']}, the manifest says {shard['count']}")


def check_pack(pack_dir: str | Path, full: bool = False) -> dict:
    """Every check of the module docstring; returns the manifest. ``full``: sha256 of every shard."""
    from ffem_cli.data.pipeline import INDEX, _load_index, read_manifest

    pack_dir = Path(pack_dir)
    manifest = read_manifest(pack_dir)
    recorded = manifest.get("index", {})
    recorded = recorded.get("sha256") if isinstance(recorded, dict) else None
    if recorded and file_sha256(pack_dir / INDEX) != recorded:
        raise corrupted(pack_dir / INDEX, "its sha256 differs from the manifest's")
    index = _load_index(pack_dir)
    rows_of = _rows_by_shard(index["shard"], len(manifest["shards"]))
    for shard, rows in zip(manifest["shards"], rows_of, strict=True):
        _check_framing(pack_dir / shard["file"], index["offset"][rows], index["length"][rows])
    _check_sample(pack_dir, manifest, index, rows_of)
    if full:
        for shard in manifest["shards"]:
            if file_sha256(pack_dir / shard["file"]) != shard.get("sha256"):
                raise corrupted(pack_dir / shard["file"], "its sha256 differs from the manifest's")
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


def _check_sample(pack_dir: Path, manifest: dict, index: dict[str, np.ndarray],
                  rows_of: list[np.ndarray]) -> None:
    """Read back the first and last record of each shard and ``SAMPLE`` spread over the pack."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    from ffem_cli.data.tfrecord import FrameError, read_frame

    count = len(index["label"])
    if not count:
        return
    ends = [rows[[0, -1]] for rows in rows_of if len(rows)]
    chosen = np.unique(np.concatenate([*ends, np.linspace(0, count - 1, min(SAMPLE, count)).astype(int)]))
    files = [pack_dir / s["file"] for s in manifest["shards"]]
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
