"""Writers of the face-data formats ``ffem pack`` reads, for tests (and bench/pack.py).

``write_recordio`` writes insightface RecordIO as MXNet's ``MXIndexedRecordIO``
does; ``write_seed_tfrecord`` writes the seed FFEM features through ``tf.io``.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

MAGIC = 0xCED7230A


def jpeg(size: tuple[int, int], seed: int, quality: int = 90) -> bytes:
    """A small JPEG of smooth random colour blobs (``size`` = width, height)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def recordio_record(image: bytes, label: float, labels: tuple[float, ...] = ()) -> bytes:
    """One record: magic, length, ``IfQQ`` header (+ float labels), image, padding to 4 bytes."""
    payload = struct.pack("<IfQQ", len(labels), label, 0, 0) + struct.pack(f"<{len(labels)}f", *labels) + image
    return struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)


def write_recordio(
    folder: Path,
    faces: list[tuple[int, bytes]],
    index_record: bool = True,
    classes: int | None = None,
    size: tuple[int, int] = (112, 112),
) -> Path:
    """``folder/train.rec``, ``train.idx`` and ``property`` holding ``faces`` ``(label, jpeg)``.

    With ``index_record`` key 0 says images are keys 1..n and keys n+1.. give
    each identity's key range, as insightface writes them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    records: list[bytes] = []
    labels = [label for label, _ in faces]
    if index_record:
        identities = sorted(set(labels))
        first = len(faces) + 1
        records.append(recordio_record(b"", 0.0, (float(first), float(first + len(identities)))))
    records += [recordio_record(image, float(label)) for label, image in faces]
    if index_record:
        for identity in identities:
            keys = [i + 1 for i, label in enumerate(labels) if label == identity]
            records.append(recordio_record(b"", 0.0, (float(keys[0]), float(keys[-1] + 1))))
    offset, lines = 0, []
    key0 = 0 if index_record else 1
    with open(folder / "train.rec", "wb") as handle:
        for number, record in enumerate(records):
            lines.append(f"{number + key0}\t{offset}\n")
            handle.write(record)
            offset += len(record)
    (folder / "train.idx").write_text("".join(lines))
    count = classes if classes is not None else max(labels) + 1
    (folder / "property").write_text(f"{count},{size[1]},{size[0]}")
    return folder


def write_seed_tfrecord(path: Path, items: list[tuple[bytes, int, tuple[int, int, int, int]]], drop: str = "") -> Path:
    """A seed FFEM TFRecord: ``jpeg``, ``label``, ``x1..y2`` per item; ``drop`` leaves one feature out."""
    import tensorflow as tf

    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label, (x1, y1, x2, y2) in items:
            values = {"jpeg": image, "label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
            values.pop(drop, None)
            example = tf.train.Example(features=tf.train.Features(feature={k: feature(v) for k, v in values.items()}))
            writer.write(example.SerializeToString())
    return path
