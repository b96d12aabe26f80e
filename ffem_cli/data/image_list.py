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
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ffem_cli import atomic
from ffem_cli.data.crop import MAX_COORDINATE
from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256
from ffem_cli.images import ImageReadError, image_size, path_under

BOX_KEYS = ("x1", "y1", "x2", "y2")


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
    posix = PurePosixPath(key)
    if posix.is_absolute() or "\\" in key or ".." in posix.parts:
        return "the image path must be relative to ROOT (no leading /, no .., / separators)"
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

    coords = []
    for name in BOX_KEYS:
        value = _as_int(raw[name])
        if value is None:
            problems.append(f"{name} {_show(raw[name])} is not an integer")
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
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise FfemError(f"{prefix}: {problems[0]}{suffix}")


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


def load_image_list(path: str | os.PathLike, allow_gaps: bool = False) -> dict[str, FaceEntry]:
    """Read and validate an image list; return ``{relative path: FaceEntry}`` in file order.

    Raises ``FfemError`` with one line naming the file, the first bad entry
    and what is wrong, plus how many more problems there are. Checked:
    readable JSON (line/column of a syntax error), a top-level object, no
    duplicate keys, at least one entry, each entry an object with integer
    ``label >= 0`` and a non-empty integer box, optional 5x2 numeric
    landmarks, numeric score and string group, and labels exactly ``0..N-1``
    (the missing labels are named) unless ``allow_gaps`` (``pack --relabel``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FfemError(f"{path}: no such image list") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FfemError(f"{path}: cannot read the image list ({exc})") from None
    try:
        raw = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise FfemError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except _DuplicateKey as exc:
        raise FfemError(f"{path}: {_show(exc.key)} appears more than once") from None
    except (ValueError, RecursionError) as exc:  # over Python's integer-digit or nesting limits
        raise FfemError(f"{path}: unreadable JSON ({_limit_text(exc)})") from None
    if not isinstance(raw, dict):
        raise FfemError(f"{path}: the top level must be an object {{\"rel/path.jpg\": {{...}}}}, not {type(raw).__name__}")
    if not raw:
        raise FfemError(f"{path}: the image list has no entries")

    entries: dict[str, FaceEntry] = {}
    problems: list[str] = []
    spelled: dict[str, str] = {}  # normalised key -> the key as written
    for key, value in raw.items():
        same = spelled.setdefault(PurePosixPath(key).as_posix(), key)
        if same != key:
            problems.append(f"{_show(key)}: the same image as {_show(same)} (one photo listed twice)")
        entry, entry_problems = parse_entry(key, value)
        problems.extend(f"{_show(key)}: {problem}" for problem in entry_problems)
        if entry is not None:
            entries[key] = entry
    if not problems and not allow_gaps:
        gap = label_gap_problem(np.array([entry.label for entry in entries.values()]))
        if gap:
            problems.append(gap)
    _raise_problems(str(path), problems)
    return entries


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


def _check_one(root: Path, key: str, entry: FaceEntry, follow_symlinks: bool) -> tuple[str | None, str, str]:
    """(problem, fit, box text) of one entry; fit as ``box_fit``."""
    try:
        width, height = image_size(path_under(root, key, follow_symlinks))
    except ImageReadError as exc:
        if exc.reason == "missing":
            return f"{_show(key)}: missing file" + ("" if exc.detail == "no such file" else f" ({exc.detail})"), "", ""
        what = "unreadable image" if exc.reason == "corrupt" else exc.reason
        return f"{_show(key)}: {what} ({exc.detail})", "", ""
    x1, y1, x2, y2 = entry.box
    return None, box_fit(entry.box, width, height), f"box ({x1}, {y1}, {x2}, {y2}) lies outside the {width}x{height} image"


def check_against_images(
    entries: dict[str, FaceEntry],
    root: str | os.PathLike,
    workers: int = 4,
    strict_boxes: bool = True,
    follow_symlinks: bool = False,
) -> BoxCheck:
    """Check that every entry's file exists under ``root`` and see where its box lies.

    With ``strict_boxes`` a box not wholly inside its image is an error;
    otherwise boxes crossing the border are returned as clipped and boxes with
    no pixel inside as outside (``pack`` crops the first with padding and
    rejects the second). Image paths follow ``images.path_under``.

    Only image headers are read (PIL, no decoding: ~25 µs each from the page
    cache), in ``workers`` threads. Threads help while the files come from
    disk; once cached, header parsing holds the GIL and more threads only
    contend (2,000 cached LFW headers: 0.05 s with 1 thread, 0.07 s with 4,
    0.16 s with 16). Raises ``FfemError`` naming the first bad entry (in
    list order) and how many more there are.
    """
    root = Path(root)
    if not root.is_dir():
        raise FfemError(f"{root}: image root is not a folder")
    keys = list(entries)
    # One task per slice of keys: a task per key spends more time in the
    # executor's locks than in reading a header (2,000 tasks: ~0.1 s).
    slices = [keys[i::workers] for i in range(workers)]

    def check_slice(part: list[str]) -> list[tuple[str, tuple[str | None, str, str]]]:
        return [(key, _check_one(root, key, entries[key], follow_symlinks)) for key in part]

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        found = dict(pair for part in pool.map(check_slice, slices) for pair in part)
    problems = []
    for key in keys:
        problem, fit, text = found[key]
        if problem is None and strict_boxes and fit != "inside":
            problem = f"{_show(key)}: {text}"
        if problem is not None:
            problems.append(problem)
    _raise_problems(str(root), problems)
    return BoxCheck(
        clipped=[key for key in keys if found[key][1] == "clipped"],
        outside={key: found[key][2] for key in keys if found[key][1] == "outside"},
    )


def write_image_list(path: str | os.PathLike, entries: dict[str, FaceEntry]) -> None:
    """Atomically write ``entries`` in the seed format, keys sorted, one entry per line."""
    lines = [
        f"  {_show(key)}: {json.dumps(entries[key].to_json(), ensure_ascii=False)}"
        for key in sorted(entries)
    ]
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
