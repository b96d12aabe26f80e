"""insightface RecordIO (``train.rec`` + ``train.idx`` + ``property``), read in pure Python.

MS1MV2/MS1MV3, Glint360K, WebFace and the other insightface sets ship as:

* ``train.idx``: text lines ``key<TAB>byte offset`` of each record in ``train.rec``;
* ``train.rec``: records, each ``magic 0xced7230a`` (uint32 LE), a uint32 whose low
  29 bits are the payload length (the top 3 bits a continuation flag, 0 for a
  whole record), the payload, zero padding to a multiple of 4 bytes;
* the payload: a 24-byte header ``IfQQ`` (flag, label, id, id2), then ``flag``
  float32 labels when ``flag > 0`` (the class is the first), then the image bytes;
* record 0 with ``flag > 0`` is an index: its labels ``[a, b)`` say that the
  images are keys ``1 .. a-1`` (keys ``a .. b-1`` list each identity's range).
  Otherwise every key of the idx is an image;
* ``property``: ``classes,height,width``.

Opening reads the idx and the 36-byte head of every image record (about 2 µs
each, one ``pread``), so a truncated file, an offset past the end, a bad magic,
an index record pointing past the idx or a ``property`` that disagrees with the
labels fails with one line before any work. The images are read by the workers.
"""

from __future__ import annotations

import hashlib
import os
import struct
from array import array
from pathlib import Path

import numpy as np

from ffem_cli.data.image_list import label_gap_problem
from ffem_cli.data.sources import Record, Source, SourceTable
from ffem_cli.errors import FfemError
from ffem_cli.images import ImageReadError

MAGIC = 0xCED7230A
LENGTH_MASK = (1 << 29) - 1
HEAD = struct.Struct("<IIIfQQ")  # magic, length word, flag, label, id, id2 (32 bytes)
FIRST_LABEL = struct.Struct("<f")


def rec_files(path: Path) -> tuple[Path, Path, Path]:
    """``(train.rec, train.idx, property)`` for a ``.rec`` file or the folder holding ``train.rec``."""
    rec = path / "train.rec" if path.is_dir() else path
    return rec, rec.with_suffix(".idx"), rec.parent / "property"


def read_idx(idx: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, offsets)`` (int64, sorted by key) from ``key<TAB>offset`` lines."""
    try:
        tokens = idx.read_bytes().split()
    except OSError as exc:
        raise FfemError(f"{idx}: cannot read the RecordIO index ({exc.strerror or exc})") from None
    if not tokens or len(tokens) % 2:
        raise FfemError(f"{idx}: not 'key<TAB>offset' lines ({len(tokens)} fields)")
    try:
        pairs = np.array(tokens, dtype="S").astype(np.int64).reshape(-1, 2)
    except ValueError:
        raise FfemError(f"{idx}: not 'key<TAB>offset' lines (non-integer field)") from None
    order = np.argsort(pairs[:, 0], kind="stable")
    keys, offsets = pairs[order, 0], pairs[order, 1]
    if len(np.unique(keys)) != len(keys):
        raise FfemError(f"{idx}: a key appears more than once")
    return keys, offsets


def read_property(path: Path) -> tuple[int, int, int] | None:
    """``(classes, height, width)`` from ``property``, or ``None`` when there is none."""
    if not path.is_file():
        return None
    try:
        values = tuple(int(v) for v in path.read_text(encoding="utf-8").strip().split(","))
    except (OSError, UnicodeDecodeError, ValueError):
        values = ()
    if len(values) != 3:
        raise FfemError(f"{path}: expected 'classes,height,width'")
    return values


class RecordIOSource(Source):
    """An insightface RecordIO set; ``ref`` is a record's byte offset in ``train.rec``."""

    format = "insightface-recordio"

    def __init__(self, path: Path):
        super().__init__(path)
        self.rec, self.idx, self.property = rec_files(path)
        self._fd: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def describe(self) -> dict:
        """Fingerprint: sha256 of the idx, the property, the ``.rec``'s size and its first and last MiB.

        Not of the whole ``.rec``: that is 100+ GB for the large sets and would
        take minutes on every run. The idx holds every record's offset, so a
        different set or a rewritten file of the same records changes it.
        """
        digest = hashlib.sha256()
        for part in (self.idx, self.property):
            if part.is_file():
                digest.update(part.read_bytes())
        size = self.rec.stat().st_size
        digest.update(str(size).encode())
        with open(self.rec, "rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read(1 << 20))
        return {"path": str(self.rec.resolve()), "format": self.format, "fingerprint": digest.hexdigest()}

    def table(self, workers: int = 1) -> SourceTable:
        for needed in (self.rec, self.idx):
            if not needed.is_file():
                raise FfemError(f"{needed}: missing (a RecordIO set is train.rec + train.idx + property)")
        keys, offsets = read_idx(self.idx)
        size = self.rec.stat().st_size
        past = np.flatnonzero(offsets + HEAD.size > size)
        if len(past):
            i = past[0]
            raise FfemError(
                f"{self.idx}: key {keys[i]} points at byte {offsets[i]}, past the end of "
                f"{self.rec.name} ({size} bytes): the .rec is truncated or the idx is not its own"
            )
        with open(self.rec, "rb") as handle:
            fd = handle.fileno()
            image_keys = self._image_keys(fd, keys, offsets)
            positions = np.searchsorted(keys, image_keys)
            image_offsets = offsets[positions]
            labels = array("q")
            for key, offset in zip(image_keys.tolist(), image_offsets.tolist(), strict=True):
                labels.append(self._head_label(fd, key, offset, size))
        labels = np.frombuffer(labels, dtype=np.int64) if len(labels) else np.zeros(0, np.int64)
        if not len(labels):
            raise FfemError(f"{self.rec}: holds no images")
        self._check_property(labels)
        return SourceTable(refs=image_offsets, labels=labels, groups=np.full(len(labels), -1, np.int32))

    def _image_keys(self, fd: int, keys: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        if keys[0] != 0:
            return keys
        flag, labels = self._index_record(fd, int(offsets[0]))
        if flag == 0:
            return keys
        first_identity = int(labels[0])
        wanted = np.arange(1, first_identity, dtype=np.int64)
        present = np.isin(wanted, keys)
        if not present.all():
            missing = int(wanted[~present][0])
            raise FfemError(
                f"{self.rec}: record 0 says images are keys 1..{first_identity - 1}, but key "
                f"{missing} is not in {self.idx.name} (its last key is {int(keys[-1])})"
            )
        return wanted

    def _index_record(self, fd: int, offset: int) -> tuple[int, tuple[float, ...]]:
        head = os.pread(fd, HEAD.size + 8, offset)
        magic, word, flag, _label, _id, _id2 = HEAD.unpack_from(head)
        if magic != MAGIC:
            raise FfemError(f"{self.rec}: record 0 at byte {offset} has a bad magic {magic:#010x}")
        if flag < 2:
            return 0, ()
        return flag, struct.unpack_from("<2f", head, HEAD.size)

    def _head_label(self, fd: int, key: int, offset: int, size: int) -> int:
        head = os.pread(fd, HEAD.size + 4, offset)
        if len(head) < HEAD.size:
            raise FfemError(f"{self.rec}: truncated: record {key} at byte {offset} is cut off")
        magic, word, flag, label, _id, _id2 = HEAD.unpack_from(head)
        if magic != MAGIC:
            raise FfemError(
                f"{self.rec}: record {key} at byte {offset} has a bad magic {magic:#010x} "
                f"(expected {MAGIC:#010x}); the file or its idx is damaged"
            )
        length = word & LENGTH_MASK
        if word >> 29:
            raise FfemError(f"{self.rec}: record {key} is split over several parts, which ffem does not read")
        if offset + 8 + length > size:
            raise FfemError(
                f"{self.rec}: truncated: record {key} at byte {offset} needs {length} bytes, "
                f"the file ends {size - offset - 8} bytes later"
            )
        if length < 24 + 4 * flag:
            raise FfemError(f"{self.rec}: record {key} at byte {offset} is shorter than its header")
        if flag > 0:
            label = FIRST_LABEL.unpack_from(head, HEAD.size)[0]
        return int(label)

    def _check_property(self, labels: np.ndarray) -> None:
        prop = read_property(self.property)
        if labels.min() < 0:
            raise FfemError(f"{self.rec}: a record has the negative label {int(labels.min())}")
        if prop is None:
            return
        classes = prop[0]
        highest = int(labels.max())
        if highest >= classes or label_gap_problem(labels) is None and highest + 1 != classes:
            raise FfemError(
                f"{self.property}: says {classes} classes, but the records' labels run "
                f"0..{highest} ({len(np.unique(labels))} distinct)"
            )

    def key(self, ref: int) -> str:
        return f"{self.rec.name}@{ref}"

    def read(self, ref: int) -> Record:
        if self._fd is None:
            self._fd = os.open(self.rec, os.O_RDONLY)
        head = os.pread(self._fd, 12, ref)
        magic, word, flag = struct.unpack_from("<III", head)
        length = word & LENGTH_MASK
        payload = os.pread(self._fd, length, ref + 8)
        if magic != MAGIC or len(payload) != length:
            raise ImageReadError(self.rec, "corrupt", f"record at byte {ref} is damaged")
        return Record(key=self.key(ref), data=payload[24 + 4 * flag :])
