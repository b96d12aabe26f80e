"""The ``image_list.json`` schema: one face per photo, written by ``ffem detect``.

The file is one JSON object keyed by the image path relative to the identity
folder ROOT (POSIX separators)::

    {"<identity>/<file>.jpg": {"label": 0, "x1": 10, "y1": 12, "x2": 90, "y2": 110,
                                "landmarks": [[x, y], ...5], "score": 0.9987}, ...}

- ``label``: integer class ``0..N-1``; every label in that range is used (no gaps).
- ``x1, y1, x2, y2``: the face box in integer pixels, left/top/right/bottom,
  ``x1 < x2`` and ``y1 < y2`` (right and bottom are exclusive edges, as in
  ``image[y1:y2, x1:x2]``). A box may cross the image border (loose boxes,
  boxes made from landmarks): ``pack`` crops it with the outside padded and
  counts it as clipped; a box with no pixel inside the image is rejected.
- ``landmarks`` (optional): five ``[x, y]`` float pixel points in the order
  left eye, right eye, nose tip, left mouth corner, right mouth corner.
- ``score`` (optional): the detector's confidence in ``[0, 1]``.
- ``group`` (optional): a string such as ``"African"`` (``detect --depth 2``),
  for ``pack --groups``.

Integer fields also accept integral JSON floats (``3.0`` reads as ``3``,
since many tools write numbers that way); ``1.5``, ``true`` and strings are
rejected. Other keys in an entry are ignored. ``<list stem>.label_map.json``
beside the list maps identity name to label (named after its list, so two
lists in one folder keep their own maps).

Reading streams: ``iter_image_list`` parses the top-level object one entry
at a time from 1 MiB chunks, ``scan_image_list`` validates each entry and
keeps numpy columns (``ListedFaces``), ``load_image_list`` turns those into
``{key: FaceEntry}`` for callers that want a dict.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ffem_cli import atomic
from ffem_cli.data.crop import MAX_COORDINATE
from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256
from ffem_cli.images import ImageReadError, ImageRoot, image_size

BOX_KEYS = ("x1", "y1", "x2", "y2")
_CHUNK = 1 << 20  # characters read at a time while streaming a list
_TAIL = 8  # a parse that ends this close to the end of the read text is retried with more text
_COLUMN_ROWS = 1 << 16  # entries gathered as Python objects before they become numpy columns
_MAX_LABEL = 2**31 - 1  # pack labels are int32
_MAX_BOX_COORDINATE = 2**62  # boxes are int64 columns
_NO_GROUP = -1


@dataclass(frozen=True, eq=False)
class FaceEntry:
    """One face of an image list.

    ``box`` is ``(x1, y1, x2, y2)``: left, top, right, bottom in integer pixels
    (right/bottom exclusive). ``landmarks`` is a ``(5, 2)`` float32 array of
    ``x, y`` pixels (left eye, right eye, nose, left/right mouth corner) or
    ``None``; ``score`` the detector confidence or ``None``.
    """

    label: int
    box: tuple[int, int, int, int]
    landmarks: np.ndarray | None = None
    score: float | None = None
    group: str | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaceEntry):
            return NotImplemented
        same_landmarks = (self.landmarks is None and other.landmarks is None) or (
            self.landmarks is not None
            and other.landmarks is not None
            and np.array_equal(self.landmarks, other.landmarks)
        )
        return (
            self.label == other.label
            and self.box == other.box
            and self.score == other.score
            and self.group == other.group
            and same_landmarks
        )

    __hash__ = None

    def to_json(self) -> dict[str, Any]:
        """The entry as written to ``image_list.json`` (landmarks 2 decimals, score 4)."""
        x1, y1, x2, y2 = self.box
        entry: dict[str, Any] = {"label": self.label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
        if self.landmarks is not None:
            entry["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]
        if self.score is not None:
            entry["score"] = round(float(self.score), 4)
        if self.group is not None:
            entry["group"] = self.group
        return entry


def _show(value: Any) -> str:
    """``value`` as it appears in JSON (``true``, ``"10"``, ``1.5``)."""
    return json.dumps(value, ensure_ascii=False)


def _as_int(value: Any) -> int | None:
    """``value`` as an int when it is a JSON integer or an integral float; else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _key_problem(key: str) -> str | None:
    if not key:
        return "the image path is empty"
    if key.startswith("/") or "\\" in key or ".." in key.split("/"):
        return "the image path must be relative to ROOT (no leading /, no .., / separators)"
    if "\x00" in key:
        return "the image path holds a NUL character"
    return None


def parse_entry(key: str, raw: Any) -> tuple[FaceEntry | None, list[str]]:
    """Validate one entry; return it (or ``None``) and its problems (without the key)."""
    problems: list[str] = []
    key_problem = _key_problem(key)
    if key_problem:
        problems.append(key_problem)
    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else _show(raw)
        return None, [*problems, f"entry is {kind}, not an object"]
    missing = [name for name in ("label", *BOX_KEYS) if name not in raw]
    if missing:
        return None, [*problems, f"missing {', '.join(missing)}"]

    label = _as_int(raw["label"])
    if label is None:
        problems.append(f"label {_show(raw['label'])} is not an integer")
    elif label < 0:
        problems.append(f"label {label} is negative")
    elif label > _MAX_LABEL:
        problems.append(f"label {label} is too large (at most {_MAX_LABEL})")

    coords = []
    for name in BOX_KEYS:
        value = _as_int(raw[name])
        if value is None:
            problems.append(f"{name} {_show(raw[name])} is not an integer")
        elif abs(value) > _MAX_BOX_COORDINATE:
            problems.append(f"{name} {value} is beyond ±{_MAX_BOX_COORDINATE} pixels")
            value = None
        coords.append(value)
    x1, y1, x2, y2 = coords
    if None not in coords and (x2 <= x1 or y2 <= y1):
        problems.append(f"box ({x1}, {y1}, {x2}, {y2}) is empty: need x2 > x1 and y2 > y1")

    landmarks = None
    raw_landmarks = raw.get("landmarks")
    if raw_landmarks is not None:
        well_formed = (
            isinstance(raw_landmarks, list)
            and len(raw_landmarks) == 5
            and all(isinstance(p, list) and len(p) == 2 and all(map(_is_number, p)) for p in raw_landmarks)
        )
        if not well_formed:
            problems.append("landmarks must be 5 [x, y] pairs of finite numbers")
        elif not all(abs(value) <= MAX_COORDINATE for point in raw_landmarks for value in point):
            problems.append(f"landmarks lie beyond ±{MAX_COORDINATE:g} pixels")
        else:
            landmarks = np.asarray(raw_landmarks, dtype=np.float32)

    score = raw.get("score")
    if score is not None and not _is_number(score):
        problems.append(f"score {_show(score)} is not a number")

    group = raw.get("group")
    if group is not None and not (isinstance(group, str) and group):
        problems.append(f"group {_show(group)} is not a non-empty string")

    if problems:
        return None, problems
    score = None if score is None else float(score)
    return FaceEntry(label, (x1, y1, x2, y2), landmarks, score, group), []


def _raise_problems(prefix: str, problems: list[str]) -> None:
    if problems:
        _raise_first(prefix, problems[0], len(problems) - 1)


def _raise_first(prefix: str, problem: str, more: int) -> None:
    """``FfemError``: ``prefix: problem`` and how many ``more`` problems there are."""
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    raise FfemError(f"{prefix}: {problem}{suffix}")


def _limit_text(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0][:120] or type(exc).__name__


def _missing_labels_text(missing: list[int]) -> str:
    shown = ", ".join(str(label) for label in missing[:5])
    rest = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"label{'s' if len(missing) > 1 else ''} {shown}{rest}"


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


class _Reader:
    """The text of a JSON file read ``_CHUNK`` characters at a time; ``text[pos:]`` is still to parse.

    Text before ``pos`` is dropped on each refill; ``where(i)`` still gives the
    file's line and column of ``text[i]``.
    """

    def __init__(self, handle, path: Path):
        self.handle, self.path = handle, path
        self.text, self.pos, self.eof = "", 0, False
        self.lines_before, self.column_base = 0, 0  # of text[0]: newlines before it, characters after the last one
        self.decoder = json.JSONDecoder(object_pairs_hook=_reject_duplicate_keys)

    def refill(self) -> None:
        dropped = self.text[: self.pos]
        newlines = dropped.count("\n")
        self.lines_before += newlines
        self.column_base = len(dropped) - dropped.rfind("\n") - 1 if newlines else self.column_base + len(dropped)
        chunk = self.handle.read(max(_CHUNK, len(self.text) - self.pos))  # doubles for an entry longer than a chunk
        self.text, self.pos, self.eof = self.text[self.pos :] + chunk, 0, not chunk

    def where(self, i: int) -> tuple[int, int]:
        newlines = self.text.count("\n", 0, i)
        column = i - self.text.rfind("\n", 0, i) if newlines else self.column_base + i + 1
        return self.lines_before + newlines + 1, column

    def malformed(self, i: int, message: str) -> FfemError:
        line, column = self.where(i)
        return FfemError(f"{self.path}: malformed JSON at line {line}, column {column}: {message}")

    def peek(self) -> str:
        """The next character that is not JSON whitespace (not consumed); ``""`` at the end of the file."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\n\r":
                self.pos += 1
            if self.pos < len(self.text) or self.eof:
                return self.text[self.pos : self.pos + 1]
            self.refill()

    def decode(self, parse):
        """``parse(text, pos) -> (value, end)`` at ``pos``, with more text read while the value may be cut off."""
        while True:
            if len(self.text) - self.pos < _TAIL and not self.eof:
                self.refill()
            try:
                value, end = parse(self.text, self.pos)
            except json.JSONDecodeError as exc:
                cut = exc.pos >= len(self.text) - _TAIL or exc.msg.startswith("Unterminated string")
                if cut and not self.eof:
                    self.refill()
                    continue
                raise self.malformed(exc.pos, exc.msg) from None
            if end >= len(self.text) - _TAIL and not self.eof:
                self.refill()
                continue
            self.pos = end
            return value


def iter_image_list(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """``(key, raw entry)`` of each top-level entry in file order, parsed one entry at a time.

    The file is read in chunks, so memory holds one chunk and one entry, not
    the list. ``FfemError`` (one line, as ``load_image_list``) for an
    unreadable file, malformed JSON (line and column), a top level that is not
    an object, a duplicate key inside an entry, or JSON beyond Python's
    limits. A duplicate top-level key is not detected here (``scan_image_list``
    finds them after the pass).
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            reader = _Reader(handle, path)
            if reader.peek() != "{":
                _raise_not_an_object(path)
            reader.pos += 1
            following = reader.peek()
            while following != "}":
                if following != '"':
                    raise reader.malformed(reader.pos, "Expecting property name enclosed in double quotes")
                key = reader.decode(lambda text, pos: json.decoder.scanstring(text, pos + 1))
                if reader.peek() != ":":
                    raise reader.malformed(reader.pos, "Expecting ':' delimiter")
                reader.pos += 1
                reader.peek()
                yield key, reader.decode(reader.decoder.raw_decode)
                following = reader.peek()
                if following == ",":
                    reader.pos += 1
                    following = reader.peek()
                    if following == "}":  # json.loads refuses a trailing comma the same way
                        raise reader.malformed(reader.pos, "Expecting property name enclosed in double quotes")
                elif following != "}":
                    raise reader.malformed(reader.pos, "Expecting ',' delimiter")
            reader.pos += 1
            if reader.peek():
                raise reader.malformed(reader.pos, "Extra data")
    except FileNotFoundError:
        raise FfemError(f"{path}: no such image list") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FfemError(f"{path}: cannot read the image list ({exc})") from None
    except _DuplicateKey as exc:
        raise FfemError(f"{path}: {_show(exc.key)} appears more than once") from None
    except (ValueError, RecursionError) as exc:  # over Python's integer-digit or nesting limits
        raise FfemError(f"{path}: unreadable JSON ({_limit_text(exc)})") from None


def _raise_not_an_object(path: Path) -> None:
    """The error for a list whose top level is not an object (parsed whole: it is not a list of entries)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FfemError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise FfemError(f"{path}: unreadable JSON ({_limit_text(exc)})") from None
    raise FfemError(f'{path}: the top level must be an object {{"rel/path.jpg": {{...}}}}, not {type(raw).__name__}')


@dataclass
class ListedFaces:
    """An image list as numpy columns, one row per entry in file order (no Python object per face).

    ``keys``: UTF-8 bytes (``S`` dtype) of each image path. ``labels`` int64
    ``(n,)``. ``boxes`` int64 ``(n, 4)``: ``x1, y1, x2, y2`` pixels.
    ``landmarks`` float32 ``(n, 5, 2)``, NaN for an entry without them.
    ``scores`` float64 ``(n,)``, NaN for none. ``groups`` int32 ``(n,)``:
    index into ``group_names``, ``-1`` for none.
    """

    keys: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    groups: np.ndarray
    group_names: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def key(self, row: int) -> str:
        return self.keys[row].decode("utf-8", "surrogatepass")

    def has_landmarks(self) -> np.ndarray:
        """bool ``(n,)``: the entry gave landmarks."""
        return ~np.isnan(self.landmarks[:, 0, 0])

    def entry(self, row: int) -> FaceEntry:
        landmarks = self.landmarks[row] if not np.isnan(self.landmarks[row, 0, 0]) else None
        score = None if np.isnan(self.scores[row]) else float(self.scores[row])
        group = self.group_names[self.groups[row]] if self.groups[row] != _NO_GROUP else None
        return FaceEntry(int(self.labels[row]), tuple(self.boxes[row].tolist()), landmarks, score, group)

    def take(self, rows: np.ndarray) -> ListedFaces:
        """The rows ``rows`` (an int array), in that order."""
        return ListedFaces(
            self.keys[rows],
            self.labels[rows],
            self.boxes[rows],
            self.landmarks[rows],
            self.scores[rows],
            self.groups[rows],
            self.group_names,
        )


_NO_LANDMARKS = np.full((5, 2), np.nan, np.float32)


class _Columns:
    """``ListedFaces`` being gathered: Python lists of at most ``_COLUMN_ROWS`` rows, then numpy blocks."""

    def __init__(self):
        self.blocks: list[tuple[np.ndarray, ...]] = []
        self.rows: list[tuple] = []
        self.group_code: dict[str, int] = {}

    def add(self, key: str, entry: FaceEntry) -> None:
        group = _NO_GROUP if entry.group is None else self.group_code.setdefault(entry.group, len(self.group_code))
        landmarks = entry.landmarks if entry.landmarks is not None else _NO_LANDMARKS
        score = np.nan if entry.score is None else entry.score
        self.rows.append((key.encode("utf-8", "surrogatepass"), entry.label, entry.box, landmarks, score, group))
        if len(self.rows) >= _COLUMN_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            keys, labels, boxes, landmarks, scores, groups = zip(*self.rows, strict=True)
            self.blocks.append(
                (
                    np.array(keys, np.bytes_),
                    np.array(labels, np.int64),
                    np.array(boxes, np.int64),
                    np.array(landmarks, np.float32),
                    np.array(scores, np.float64),
                    np.array(groups, np.int32),
                )
            )
            self.rows = []

    def finish(self) -> ListedFaces:
        self._flush()
        if not self.blocks:
            return ListedFaces(
                np.array([], np.bytes_),
                np.zeros(0, np.int64),
                np.zeros((0, 4), np.int64),
                np.zeros((0, 5, 2), np.float32),
                np.zeros(0),
                np.zeros(0, np.int32),
                [],
            )
        columns = [np.concatenate(parts) for parts in zip(*self.blocks, strict=True)]
        return ListedFaces(*columns, group_names=list(self.group_code))


def scan_image_list(path: str | os.PathLike, allow_gaps: bool = False) -> ListedFaces:
    """Stream, validate and return an image list as columns (file order).

    The checks and the one-line ``FfemError`` are those of ``load_image_list``;
    the list is parsed entry by entry (``iter_image_list``), so a list of a
    million entries is never held as Python objects. Everything is checked
    before anything is returned.
    """
    path = Path(path)
    columns = _Columns()
    first: tuple[int, int, str] | None = None  # (row, 1, text) of the first entry problem
    count = 0  # problems in all
    respelled: dict[int, bytes] = {}  # row -> its key normalised, where that differs
    for row, (key, value) in enumerate(iter_image_list(path)):
        entry, entry_problems = parse_entry(key, value)
        if entry_problems:
            count += len(entry_problems)
            first = first or (row, 1, f"{_show(key)}: {entry_problems[0]}")
            entry = FaceEntry(0, (0, 0, 1, 1))  # a placeholder row: the list is refused below
        if _respelled(key):
            respelled[row] = PurePosixPath(key).as_posix().encode("utf-8", "surrogatepass")
        columns.add(key, entry)
    if not (columns.rows or columns.blocks):
        raise FfemError(f"{path}: the image list has no entries")
    faces = columns.finish()
    _raise_twice_listed(path, faces)
    aliases = _aliases(faces, respelled)  # (row, 0, text): before the row's own problems, as written
    count += len(aliases)
    found = [problem for problem in (first, *aliases) if problem is not None]
    if found:
        _raise_first(str(path), min(found, key=lambda problem: problem[:2])[2], count - 1)
    gap = None if allow_gaps else label_gap_problem(faces.labels)
    if gap:
        _raise_first(str(path), gap, 0)
    return faces


def _respelled(key: str) -> bool:
    """Whether ``PurePosixPath(key).as_posix()`` differs from ``key`` (an empty or ``.`` component),
    without building the path object for every key."""
    return any(part in ("", ".") for part in key.split("/")) and PurePosixPath(key).as_posix() != key


def _raise_twice_listed(path: Path, faces: ListedFaces) -> None:
    """``FfemError`` for a key written twice (the one whose second appearance comes first)."""
    order = np.argsort(faces.keys, kind="stable")
    same = np.flatnonzero(faces.keys[order[1:]] == faces.keys[order[:-1]])
    if len(same):
        second = order[same + 1].min()
        raise FfemError(f"{path}: {_show(faces.key(second))} appears more than once")


def _aliases(faces: ListedFaces, respelled: dict[int, bytes]) -> list[tuple[int, int, str]]:
    """``(row, 0, problem)`` of each entry naming the same photo as an earlier entry spelled otherwise.

    ``respelled``: the normalised key (``PurePosixPath.as_posix``, never
    longer) of the rows where it differs from the key.
    """
    if not respelled:
        return []
    normal = faces.keys.copy()
    normal[list(respelled)] = list(respelled.values())
    order = np.argsort(normal, kind="stable")  # equal keys stay in file order
    found = []
    for at in np.flatnonzero(normal[order[1:]] == normal[order[:-1]]).tolist():
        start = at
        while start > 0 and normal[order[start - 1]] == normal[order[at]]:
            start -= 1
        first, later = int(order[start]), int(order[at + 1])
        found.append(
            (
                later,
                0,
                f"{_show(faces.key(later))}: the same image as {_show(faces.key(first))} (one photo listed twice)",
            )
        )
    return found


def load_image_list(path: str | os.PathLike, allow_gaps: bool = False) -> dict[str, FaceEntry]:
    """Read and validate an image list; return ``{relative path: FaceEntry}`` in file order.

    Raises ``FfemError`` with one line naming the file, the first bad entry
    and what is wrong, plus how many more problems there are. Checked:
    readable JSON (line/column of a syntax error), a top-level object, no
    duplicate keys, at least one entry, each entry an object with integer
    ``label >= 0`` and a non-empty integer box, optional 5x2 numeric
    landmarks, numeric score and string group, and labels exactly ``0..N-1``
    (the missing labels are named) unless ``allow_gaps`` (``pack --relabel``).
    ``scan_image_list`` does the same streaming, into numpy columns.
    """
    faces = scan_image_list(path, allow_gaps)
    return {faces.key(row): faces.entry(row) for row in range(len(faces))}


def label_gap_problem(labels: np.ndarray) -> str | None:
    """What is wrong when the int ``labels`` do not cover ``0..max``; else ``None``."""
    used = np.unique(labels)
    missing = np.setdiff1d(np.arange(int(used[-1]) + 1), used).tolist()
    if not missing:
        return None
    return (
        f"labels must be 0..N-1 without gaps: {_missing_labels_text(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} missing (highest label {int(used[-1])}); "
        "--relabel compacts them"
    )


def box_fit(box: tuple[int, int, int, int], width: int, height: int) -> str:
    """``"inside"``, ``"clipped"`` (partly outside the ``width x height`` image) or ``"outside"``."""
    x1, y1, x2, y2 = box
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return "outside"
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        return "clipped"
    return "inside"


@dataclass
class BoxCheck:
    """Boxes that cross the image border (``clipped``) and those with no pixel inside (``outside``)."""

    clipped: list[str]
    outside: dict[str, str]  # key -> "box (…) lies outside the WxH image"


INSIDE, CLIPPED, OUTSIDE = 0, 1, 2  # ``BoxFits.fit`` codes, as ``box_fit``'s names


@dataclass
class BoxFits:
    """Where each row's box lies in its image: ``fit`` int8 ``(n,)`` of ``INSIDE``/``CLIPPED``/``OUTSIDE``;
    ``outside``: row → "box (…) lies outside the WxH image" for the ``OUTSIDE`` rows, in row order."""

    fit: np.ndarray
    outside: dict[int, str]


def _check_one(root: ImageRoot, key: str, box: tuple[int, int, int, int]) -> tuple[str | None, str, str]:
    """(problem, fit, box text) of one entry; fit as ``box_fit``, the text only for a box not inside."""
    try:
        width, height = image_size(root.path(key))
    except ImageReadError as exc:
        if exc.reason == "missing":
            return f"{_show(key)}: missing file" + ("" if exc.detail == "no such file" else f" ({exc.detail})"), "", ""
        what = "unreadable image" if exc.reason == "corrupt" else exc.reason
        return f"{_show(key)}: {what} ({exc.detail})", "", ""
    fit = box_fit(box, width, height)
    if fit == "inside":
        return None, fit, ""
    x1, y1, x2, y2 = box
    return None, fit, f"box ({x1}, {y1}, {x2}, {y2}) lies outside the {width}x{height} image"


def check_listed_images(
    faces: ListedFaces,
    root: str | os.PathLike,
    workers: int = 4,
    strict_boxes: bool = True,
    follow_symlinks: bool = False,
    processes: int = 0,
) -> BoxFits:
    """Check that every listed file exists under ``root`` and see where its box lies.

    With ``strict_boxes`` a box not wholly inside its image is an error;
    otherwise boxes crossing the border are returned as clipped and boxes with
    no pixel inside as outside (``pack`` crops the first with padding and
    rejects the second). Image paths follow ``images.path_under``.

    Only image headers are read (PIL, no decoding: ~25 µs each from the page
    cache), in ``workers`` threads. Threads help while the files come from
    disk; once cached, header parsing holds the GIL and more threads only
    contend (2,000 cached LFW headers: 0.05 s with 1 thread, 0.07 s with 4,
    0.16 s with 16). ``processes`` >= 2 splits the rows over that many forked
    processes instead (``pack --workers``; threads when TensorFlow is loaded,
    which is not fork-safe). Raises ``FfemError`` naming the first bad entry
    (in list order) and how many more there are.
    """
    root = Path(root)
    if not root.is_dir():
        raise FfemError(f"{root}: image root is not a folder")
    job = _HeaderJob(faces, ImageRoot(root, follow_symlinks))
    if processes > 1 and "tensorflow" not in sys.modules:  # fork is unsafe once TensorFlow is loaded
        found = _in_processes(job, processes)
    else:
        # One task per slice of rows: a task per row spends more time in the
        # executor's locks than in reading a header (2,000 tasks: ~0.1 s).
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            found = [item for part in pool.map(job.check, range(workers), [workers] * workers) for item in part]
    found.sort()
    fit = np.full(len(faces), INSIDE, np.int8)
    for row, problem, code, _ in found:
        if problem is None:
            fit[row] = code
    problems = [
        problem if problem is not None else f"{_show(faces.key(row))}: {text}"
        for row, problem, _, text in found
        if problem is not None or strict_boxes
    ]
    _raise_problems(str(root), problems)
    return BoxFits(fit, {row: text for row, _, code, text in found if code == OUTSIDE})


@dataclass
class _HeaderJob:
    """What every header checker needs; ``check(first, step)`` does rows ``first, first + step, …``."""

    faces: ListedFaces
    root: ImageRoot

    def check(self, first: int, step: int) -> list[tuple[int, str | None, int, str]]:
        """``(row, problem, fit code, box text)`` of the rows that are not simply inside their image."""
        found = []
        for row in range(first, len(self.faces), step):
            box = tuple(self.faces.boxes[row].tolist())
            problem, where, text = _check_one(self.root, self.faces.key(row), box)
            if problem is not None or where != "inside":
                found.append((row, problem, _FIT_CODES.get(where, INSIDE), text))
        return found


_FIT_CODES = {"inside": INSIDE, "clipped": CLIPPED, "outside": OUTSIDE}
_forked_job: _HeaderJob | None = None  # set just before forking: the children inherit it instead of a pickle


def _check_forked(first: int, step: int) -> list[tuple[int, str | None, int, str]]:
    return _forked_job.check(first, step)


def _in_processes(job: _HeaderJob, processes: int) -> list[tuple[int, str | None, int, str]]:
    """``job`` split over ``processes`` forked processes (header parsing holds the GIL: threads do not scale)."""
    global _forked_job
    _forked_job = job
    try:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            parts = pool.starmap(_check_forked, [(first, processes) for first in range(processes)])
    finally:
        _forked_job = None
    return [item for part in parts for item in part]


def check_against_images(
    entries: dict[str, FaceEntry],
    root: str | os.PathLike,
    workers: int = 4,
    strict_boxes: bool = True,
    follow_symlinks: bool = False,
) -> BoxCheck:
    """``check_listed_images`` for ``{key: FaceEntry}``, by key."""
    columns = _Columns()
    for key, entry in entries.items():
        columns.add(key, entry)
    faces = columns.finish()
    fits = check_listed_images(faces, root, workers, strict_boxes, follow_symlinks)
    return BoxCheck(
        clipped=[faces.key(row) for row in np.flatnonzero(fits.fit == CLIPPED).tolist()],
        outside={faces.key(row): text for row, text in fits.outside.items()},
    )


def write_image_list(path: str | os.PathLike, entries: dict[str, FaceEntry]) -> None:
    """Atomically write ``entries`` in the seed format, keys sorted, one entry per line."""
    lines = [f"  {_show(key)}: {json.dumps(entries[key].to_json(), ensure_ascii=False)}" for key in sorted(entries)]
    with atomic.atomic_open(path, "w") as handle:
        handle.write("{\n" + ",\n".join(lines) + ("\n}\n" if lines else "}\n"))


def label_map_path(list_path: str | os.PathLike) -> Path:
    """Where the label map of an image list lives: ``<list stem>.label_map.json`` beside it."""
    list_path = Path(list_path)
    return list_path.with_name(f"{list_path.stem}.label_map.json")


def write_label_map(path: str | os.PathLike, label_map: dict[str, int]) -> None:
    """Atomically write ``{identity name: label}``, ordered by label."""
    ordered = dict(sorted(label_map.items(), key=lambda item: item[1]))
    atomic.write_json(path, ordered)


def load_label_map(path: str | os.PathLike) -> dict[str, int]:
    """Read ``{identity name: label}``; ``FfemError`` when missing or malformed."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FfemError(f"{path}: no such label map") from None
    except json.JSONDecodeError as exc:
        raise FfemError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FfemError(f"{path}: unreadable label map ({_limit_text(exc)})") from None
    if not isinstance(raw, dict) or not all(_as_int(v) is not None and _as_int(v) >= 0 for v in raw.values()):
        raise FfemError(f"{path}: a label map must be an object {{identity: non-negative integer label}}")
    return {name: _as_int(label) for name, label in raw.items()}


def fingerprint(path: str | os.PathLike) -> str:
    """The sha256 hex digest of an image list file (pack records it)."""
    return file_sha256(path)
