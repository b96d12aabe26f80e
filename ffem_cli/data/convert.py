"""``ffem convert``: the box/landmark files that face sets ship with → ``image_list.json``.

* ``vggface2``: ``loose_bb_*.csv`` (``NAME_ID,X,Y,W,H``) and/or
  ``loose_landmark_*.csv`` (``NAME_ID,P1X,P1Y,…,P5X,P5Y``); key
  ``<NAME_ID>.jpg`` (``n000002/0001_01.jpg``). The loose box is used when
  given, else the box is made from the landmarks.
* ``rfw``: ``<Race>_lmk.txt`` lines ``<image path> <id> x1 y1 … x5 y5``; key
  ``<Race>/<identity>/<file>`` (the layout of RFW's ``test/data``), group
  ``<Race>``, box made from the landmarks.

A box made from landmarks follows the seed's ``generate_bbox``: the extent of
the five points grown by ``2/1.5`` of itself, shifted sideways by the
eye-to-nose ratio for turned faces. Boxes may cross the image border (pack
clips them). Landmarks are kept for ``pack --align``. Labels are ``0..N-1``
over the sorted identity names; ``<list stem>.label_map.json`` is written
beside, after the list.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ffem_cli.data.image_list import FaceEntry, label_map_path, write_image_list, write_label_map
from ffem_cli.errors import FfemError

FORMATS = ("vggface2", "rfw")


def box_from_landmarks(points: np.ndarray) -> tuple[int, int, int, int]:
    """The seed's landmark box: ``points`` ``(5, 2)`` (eyes, nose, mouth corners) → ``(x1, y1, x2, y2)``."""
    xs, ys = points[:, 0], points[:, 1]
    width = (xs.max() - xs.min()) / 1.5
    height = (ys.max() - ys.min()) / 1.5
    left_line = math.dist(points[0], points[2])
    right_line = math.dist(points[1], points[2])
    if left_line > right_line:
        shift = -(1 - right_line / left_line) * 1.2
    else:
        shift = (1 - left_line / right_line) * 1.2 if right_line > 0 else 0.0
    box = (
        xs.min() - width + width * shift,
        ys.min() - height,
        xs.max() + width + width * shift,
        ys.max() + height,
    )
    return tuple(int(v) for v in box)  # truncation toward zero, as the seed's int32 cast


def _numbers(values: list[str], where: str) -> list[float]:
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise FfemError(f"{where}: coordinates must be numbers") from None
    if not all(math.isfinite(v) for v in numbers):
        raise FfemError(f"{where}: coordinates must be finite")
    return numbers


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise FfemError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise FfemError(f"{path}: empty file")
    return [h.strip() for h in rows[0]], [(n + 2, r) for n, r in enumerate(rows[1:]) if r]


def read_vggface2(files: list[Path]) -> tuple[dict[str, tuple], dict[str, np.ndarray]]:
    """``({key: box}, {key: landmarks})`` from loose-bb and loose-landmark CSVs."""
    boxes: dict[str, tuple] = {}
    landmarks: dict[str, np.ndarray] = {}
    for path in files:
        header, rows = _csv_rows(path)
        if header == ["NAME_ID", "X", "Y", "W", "H"]:
            for line, row in rows:
                where = f"{path} line {line}"
                if len(row) != 5:
                    raise FfemError(f"{where}: expected NAME_ID,X,Y,W,H, got {len(row)} fields")
                x, y, w, h = _numbers(row[1:], where)
                boxes[f"{row[0].strip()}.jpg"] = (int(x), int(y), int(x + w), int(y + h))
        elif header[:1] == ["NAME_ID"] and len(header) == 11:
            for line, row in rows:
                where = f"{path} line {line}"
                if len(row) != 11:
                    raise FfemError(f"{where}: expected NAME_ID and 10 coordinates, got {len(row)} fields")
                landmarks[f"{row[0].strip()}.jpg"] = np.array(_numbers(row[1:], where), np.float32).reshape(5, 2)
        else:
            raise FfemError(
                f"{path}: not a VGGFace2 loose_bb (NAME_ID,X,Y,W,H) or loose_landmark (NAME_ID,P1X,…,P5Y) file"
            )
    return boxes, landmarks


def read_rfw(files: list[Path]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``({key: landmarks}, {key: race})`` from ``<Race>_lmk.txt`` files."""
    landmarks: dict[str, np.ndarray] = {}
    groups: dict[str, str] = {}
    for path in files:
        race = path.name.removesuffix("_lmk.txt")
        if race == path.name:
            raise FfemError(f"{path}: an RFW landmark file is named <Race>_lmk.txt")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise FfemError(f"{path}: cannot read ({exc})") from None
        for number, text in enumerate(lines, start=1):
            fields = text.split()
            if not fields:
                continue
            where = f"{path} line {number}"
            if len(fields) != 12:
                raise FfemError(f"{where}: expected '<image> <id>' and 10 coordinates, got {len(fields)} fields")
            parts = fields[0].replace("\\", "/").split("/")
            if len(parts) < 2:
                raise FfemError(f"{where}: the image path needs its identity folder ({fields[0]!r})")
            key = f"{race}/{parts[-2]}/{parts[-1]}"
            landmarks[key] = np.array(_numbers(fields[2:], where), np.float32).reshape(5, 2)
            groups[key] = race
    return landmarks, groups


def convert(kind: str, files: list[Path], output: Path) -> tuple[int, int]:
    """Write ``output`` and ``<stem>.label_map.json`` beside it; return ``(entries, identities)``."""
    if kind not in FORMATS:
        raise FfemError(f"convert: unknown format {kind!r} (choose {', '.join(FORMATS)})")
    for path in files:
        if not path.is_file():
            raise FfemError(f"{path}: no such file")
    groups: dict[str, str] = {}
    if kind == "vggface2":
        boxes, landmarks = read_vggface2(files)
        keys = sorted(set(boxes) | set(landmarks))
    else:
        boxes = {}
        landmarks, groups = read_rfw(files)
        keys = sorted(landmarks)
    if not keys:
        raise FfemError(f"{files[0]}: no entries")
    names = sorted({key.rsplit("/", 1)[0] for key in keys})
    label_of = {name: label for label, name in enumerate(names)}
    entries = {}
    for key in keys:
        points = landmarks.get(key)
        box = boxes.get(key) or box_from_landmarks(points)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise FfemError(f"{key}: the box {box} is empty")
        entries[key] = FaceEntry(label_of[key.rsplit("/", 1)[0]], box, points, None, groups.get(key))
    write_image_list(output, entries)
    write_label_map(label_map_path(output), label_of)
    return len(entries), len(names)
