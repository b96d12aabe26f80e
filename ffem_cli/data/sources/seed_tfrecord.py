"""Seed FFEM TFRecords: one ``tf.train.Example`` per photo, cropped by ``ffem pack``.

The seed repositories' ``generate_tfrecord`` writes the features ``jpeg`` (the
whole original JPEG), ``label``, ``x1``, ``y1``, ``x2``, ``y2`` (int64) and
crops at training time. ffem crops them once, with the pack's settings (crop
mode, margin, size), so the result is an ordinary pack. SOURCE is one
``.tfrecord`` file or a folder of them (a folder holding ``manifest.json``
is an ffem pack, not a seed set).

Opening reads every frame once (CRCs checked) to learn labels and image
sizes; ``ref`` is ``file number << 40 | byte offset`` of a frame.
"""

from __future__ import annotations

import hashlib
from array import array
from pathlib import Path

import numpy as np

from ffem_cli.data.image_list import box_fit
from ffem_cli.data.sources import Record, Source, SourceTable
from ffem_cli.data.tfrecord import FrameError, iter_frames, parse_example, read_frame
from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256
from ffem_cli.images import ImageReadError, image_size

FEATURES = ("jpeg", "label", "x1", "y1", "x2", "y2")
OFFSET_BITS = 40


def seed_files(path: Path) -> list[Path]:
    """The ``.tfrecord`` files of SOURCE, sorted."""
    files = sorted(path.glob("*.tfrecord")) if path.is_dir() else [path]
    if not files:
        raise FfemError(f"{path}: no .tfrecord files in the folder")
    return files


def _example_fields(payload: bytes, where: str) -> tuple[bytes, int, tuple[int, int, int, int]]:
    try:
        features = parse_example(payload)
    except ValueError as exc:
        raise FfemError(f"{where}: not a tf.train.Example ({exc})") from None
    missing = [name for name in FEATURES if len(features.get(name, ())) != 1]
    if missing:
        raise FfemError(
            f"{where}: no {', '.join(repr(m) for m in missing)} feature; a seed FFEM TFRecord holds "
            f"{', '.join(FEATURES)} (ffem packs are read by train, not pack)"
        )
    jpeg = features["jpeg"][0]
    if not isinstance(jpeg, bytes) or any(not isinstance(features[n][0], int) for n in FEATURES[1:]):
        raise FfemError(f"{where}: 'jpeg' must be bytes and label, x1, y1, x2, y2 int64")
    box = tuple(features[n][0] for n in ("x1", "y1", "x2", "y2"))
    return jpeg, features["label"][0], box


class SeedTFRecordSource(Source):
    """Seed TFRecords: the whole JPEG plus its box."""

    format = "seed-tfrecord"

    def __init__(self, path: Path, strict_boxes: bool = False):
        super().__init__(path)
        self.files = seed_files(path)
        self.strict_boxes = strict_boxes

    def describe(self) -> dict:
        digests = "".join(file_sha256(f) for f in self.files)
        fingerprint = hashlib.sha256(digests.encode()).hexdigest()
        return {"path": str(self.path.resolve()), "format": self.format, "fingerprint": fingerprint}

    def table(self, workers: int = 1) -> SourceTable:
        refs, labels = array("q"), array("q")
        clipped, rejected = 0, []
        for number, file in enumerate(self.files):
            try:
                with open(file, "rb") as handle:
                    for offset, payload in iter_frames(handle):
                        where = f"{file}: record at byte {offset}"
                        jpeg, label, box = _example_fields(payload, where)
                        fit, size = self._fit(jpeg, box, where)
                        if fit == "outside" or (fit == "clipped" and self.strict_boxes):
                            if self.strict_boxes:
                                raise FfemError(f"{where}: box {box} lies outside the {size} image")
                            rejected.append(
                                {
                                    "path": _key(file, offset),
                                    "reason": "box-outside",
                                    "detail": f"box {box} has no pixel inside the {size} image",
                                }
                            )
                            continue
                        clipped += fit == "clipped"
                        refs.append(number << OFFSET_BITS | offset)
                        labels.append(label)
            except FrameError as exc:
                raise FfemError(f"{file}: {exc}") from None
            except OSError as exc:
                raise FfemError(f"{file}: cannot read ({exc.strerror or exc})") from None
        if not refs:
            raise FfemError(f"{self.path}: holds no usable records")
        labels_array = np.frombuffer(labels, dtype=np.int64)
        if labels_array.min() < 0:
            raise FfemError(f"{self.path}: a record has the negative label {int(labels_array.min())}")
        return SourceTable(
            refs=np.frombuffer(refs, dtype=np.int64),
            labels=labels_array,
            groups=np.full(len(refs), -1, np.int32),
            clipped=clipped,
            rejected=rejected,
        )

    @staticmethod
    def _fit(jpeg: bytes, box: tuple[int, int, int, int], where: str) -> tuple[str, str]:
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            raise FfemError(f"{where}: box {box} is empty: need x2 > x1 and y2 > y1")
        try:
            width, height = image_size(where, data=jpeg)
        except ImageReadError as exc:
            raise FfemError(f"{where}: 'jpeg' is not a readable image ({exc.reason}: {exc.detail})") from None
        return box_fit(box, width, height), f"{width}x{height}"

    def key(self, ref: int) -> str:
        return _key(self.files[ref >> OFFSET_BITS], ref & ((1 << OFFSET_BITS) - 1))

    def read(self, ref: int) -> Record:
        file = self.files[ref >> OFFSET_BITS]
        offset = ref & ((1 << OFFSET_BITS) - 1)
        try:
            with open(file, "rb") as handle:
                payload, _ = read_frame(handle, offset)
            jpeg, _, box = _example_fields(payload, f"{file}: record at byte {offset}")
        except (OSError, FrameError, FfemError, TypeError) as exc:
            raise ImageReadError(file, "corrupt", str(exc)) from None
        return Record(key=_key(file, offset), data=jpeg, box=box)


def _key(file: Path, offset: int) -> str:
    return f"{file.name}@{offset}"
