"""Parsing the pair and people files of LFW, RFW and the EE488B trainer.

LFW (Huang et al., 2007) ``pairs.txt`` (View 2): a header ``<folds>\\t<n>``,
then per fold ``n`` same-person lines ``name\\tn1\\tn2`` followed by ``n``
different-person lines ``name1\\tn1\\tname2\\tn2``; image ``n`` of ``name`` is
``name/name_%04d.jpg``. View 1 files (``pairsDevTrain.txt``,
``pairsDevTest.txt``) have a header of one number ``n`` and a single fold.
``people.txt``: a header ``<folds>``, then per fold a count line and
``name\\tcount`` lines; ``peopleDev*.txt``: a count line and ``name\\tcount``
lines.

RFW (Wang et al., ICCV 2019) ``<Race>_pairs.txt``: no header, the same 3/4
field lines (tab separated, images ``<id>/<id>_%04d.jpg``), 10 folds of
consecutive lines; ``<Race>_people.txt``: ``id count`` lines;
``<Race>_lmk.txt``: ``<path> <label>`` and ten numbers, the (x, y) of left
eye, right eye, nose, left and right mouth corner.

EE488B (``voxceleb_trainer``-style) lists: ``label,path1,path2`` per line,
label 1 for a target (same person) and 0 for an imposter.

MassFace's ``lfw_pair.txt`` (pre-aligned ``lfw-112x112``): ``<folder> <0|1>``
per line; ``ROOT/<folder>/`` holds the pair's two images (taken in name order).

Folds: every reader gives each pair a fold by ``metrics.stratified_folds``
(fold i = the i-th tenth of the same-person pairs plus the i-th tenth of the
different-person pairs, in file order), so a fold never holds one kind only,
however the file is ordered. On LFW's ``pairs.txt`` these are the official
folds. A View 1 style file (one fold) keeps a single fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffem_cli.data.crop import MAX_COORDINATE
from ffem_cli.errors import FfemError
from ffem_cli.evaluate.metrics import stratified_folds
from ffem_cli.images import ImageReadError, path_under

NUM_FOLDS = 10


@dataclass(frozen=True)
class PairList:
    """Pairs of images (paths relative to an image root), labels and folds.

    ``same[i]``: True for a same-person (target) pair; ``folds[i]``: fold id
    (see the module docstring); ``lines[i]``: the 1-based line number in ``source``.
    """

    source: Path
    first: list[str]
    second: list[str]
    same: np.ndarray
    folds: np.ndarray
    lines: list[int]

    def __len__(self) -> int:
        return len(self.first)


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of non-blank lines; ``FfemError`` when missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FfemError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise FfemError(f"{path}: empty list (no pairs)")
    return lines


def _image_name(path: Path, line: int, name: str, number: str) -> str:
    try:
        index = int(number)
    except ValueError:
        raise FfemError(f"{path} line {line}: image number {number!r} is not an integer") from None
    return f"{name}/{name}_{index:04d}.jpg"


def _parse_name_lines(path: Path, entries: list[tuple[int, str]]) -> tuple[list[str], list[str], list[bool], list[int]]:
    first, second, same, lines = [], [], [], []
    for line, text in entries:
        fields = text.split()
        if len(fields) == 3:
            first.append(_image_name(path, line, fields[0], fields[1]))
            second.append(_image_name(path, line, fields[0], fields[2]))
            same.append(True)
        elif len(fields) == 4:
            first.append(_image_name(path, line, fields[0], fields[1]))
            second.append(_image_name(path, line, fields[2], fields[3]))
            same.append(False)
        else:
            raise FfemError(
                f"{path} line {line}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {len(fields)} fields"
            )
        lines.append(line)
    return first, second, same, lines


def read_lfw_pairs(path: Path) -> PairList:
    """An LFW pair file (View 2 ``pairs.txt`` or View 1 ``pairsDev*.txt``), header checked."""
    path = Path(path)
    entries = _read_lines(path)
    header_line, header = entries[0]
    counts = header.split()
    try:
        numbers = [int(v) for v in counts]
    except ValueError:
        numbers = []
    if len(numbers) == 2:
        num_folds, per_class = numbers
    elif len(numbers) == 1:
        num_folds, per_class = 1, numbers[0]
    else:
        raise FfemError(f"{path} line {header_line}: expected a header '<folds> <pairs>' or '<pairs>', got {header!r}")
    body = entries[1:]
    expected = num_folds * 2 * per_class
    if not body:
        raise FfemError(f"{path}: empty list (no pairs after the header)")
    if len(body) != expected:
        raise FfemError(
            f"{path}: the header '{' '.join(counts)}' announces {expected} pairs but the file has {len(body)}"
        )
    first, second, same, lines = _parse_name_lines(path, body)
    return _with_folds(path, first, second, same, lines, num_folds)


def _with_folds(path: Path, first, second, same, lines, num_folds: int = NUM_FOLDS) -> PairList:
    """A ``PairList`` with stratified folds (one fold when ``num_folds`` is 1)."""
    same = np.array(same, dtype=bool)
    if num_folds == 1:
        folds = np.zeros(same.size, dtype=np.int64)
    else:
        try:
            folds = stratified_folds(same, num_folds)
        except ValueError as exc:
            raise FfemError(f"{path}: {exc}") from None
    return PairList(path, first, second, same, folds, lines)


def read_lfw_people(path: Path) -> list[dict[str, int]]:
    """An LFW people file: one ``{name: image count}`` per fold (``people.txt``: 10; ``peopleDev*.txt``: 1)."""
    path = Path(path)
    entries = _read_lines(path)
    # people.txt: "<folds>" then "<count>" + names per fold; peopleDev*.txt: "<count>" + names
    multi_fold = len(entries) > 1 and len(entries[1][1].split()) == 1
    fold_count, position = 1, 0
    if multi_fold:
        if not entries[0][1].isdigit():
            raise FfemError(f"{path} line {entries[0][0]}: expected the number of folds, got {entries[0][1]!r}")
        fold_count, position = int(entries[0][1]), 1
    folds = []
    for _ in range(fold_count):
        if position >= len(entries):
            raise FfemError(f"{path}: ends before fold {len(folds) + 1} of {fold_count}")
        line, text = entries[position]
        try:
            count = int(text)
        except ValueError:
            raise FfemError(f"{path} line {line}: expected a person count, got {text!r}") from None
        people = {}
        for line, text in entries[position + 1 : position + 1 + count]:
            fields = text.split()
            if len(fields) != 2 or not fields[1].isdigit():
                raise FfemError(f"{path} line {line}: expected 'name count', got {text!r}")
            people[fields[0]] = int(fields[1])
        if len(people) != count:
            raise FfemError(f"{path} line {line}: fold announces {count} people but lists {len(people)}")
        folds.append(people)
        position += 1 + count
    if position != len(entries):
        raise FfemError(f"{path} line {entries[position][0]}: unexpected text after the last fold")
    return folds


def read_rfw_pairs(path: Path, num_folds: int = NUM_FOLDS) -> PairList:
    """An RFW ``<Race>_pairs.txt``: 3/4-field lines, ``num_folds`` stratified folds."""
    path = Path(path)
    first, second, same, lines = _parse_name_lines(path, _read_lines(path))
    return _with_folds(path, first, second, same, lines, num_folds)


def read_rfw_people(path: Path) -> dict[str, int]:
    """An RFW ``<Race>_people.txt``: ``{identity: image count}``."""
    people = {}
    for line, text in _read_lines(path):
        fields = text.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise FfemError(f"{path} line {line}: expected 'identity count', got {text!r}")
        people[fields[0]] = int(fields[1])
    return people


def read_rfw_landmarks(path: Path) -> dict[str, tuple[tuple[float, float], ...]]:
    """An RFW ``<Race>_lmk.txt``: ``{image file name: 5 (x, y) points}``."""
    landmarks = {}
    for line, text in _read_lines(path):
        fields = text.split()
        if len(fields) != 12:
            raise FfemError(
                f"{path} line {line}: expected '<image> <label>' and 10 coordinates, got {len(fields)} fields"
            )
        try:
            values = [float(v) for v in fields[2:]]
        except ValueError:
            raise FfemError(f"{path} line {line}: landmark coordinates must be numbers") from None
        if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in values):
            raise FfemError(
                f"{path} line {line}: landmark coordinates must be finite pixels within ±{MAX_COORDINATE:g}"
            )
        landmarks[fields[0].rsplit("/", 1)[-1]] = tuple(zip(values[0::2], values[1::2], strict=True))
    return landmarks


def read_label_pairs(path: Path) -> PairList:
    """An EE488B list: ``label,path1,path2`` per line (1 = target, 0 = imposter); one fold."""
    path = Path(path)
    first, second, same, lines = [], [], [], []
    for line, text in _read_lines(path):
        fields = [f.strip() for f in text.split(",")]
        if len(fields) != 3 or not all(fields):
            raise FfemError(f"{path} line {line}: expected 'label,path1,path2', got {text!r}")
        if fields[0] not in ("0", "1"):
            raise FfemError(f"{path} line {line}: label must be 1 (target) or 0 (imposter), got {fields[0]!r}")
        same.append(fields[0] == "1")
        first.append(fields[1])
        second.append(fields[2])
        lines.append(line)
    return _with_folds(path, first, second, same, lines, _folds_for(same))


def read_massface_pairs(path: Path, image_root: Path) -> PairList:
    """MassFace's ``lfw_pair.txt``: ``<folder> <1|0>`` lines, two images in ``image_root/<folder>/``."""
    path, image_root = Path(path), Path(image_root)
    first, second, same, lines = [], [], [], []
    for line, text in _read_lines(path):
        fields = text.split()
        if len(fields) != 2 or fields[1] not in ("0", "1"):
            raise FfemError(f"{path} line {line}: expected '<pair folder> <1|0>', got {text!r}")
        folder = fields[0]
        if "/" in folder or "\\" in folder or folder in (".", ".."):
            raise FfemError(f"{path} line {line}: pair folder {folder!r} must be a plain folder name")
        pair_dir = image_root / folder
        images = sorted(p.name for p in pair_dir.iterdir() if p.is_file()) if pair_dir.is_dir() else []
        if len(images) != 2:
            raise FfemError(f"{path} line {line}: {pair_dir} must hold exactly two images, found {len(images)}")
        first.append(f"{folder}/{images[0]}")
        second.append(f"{folder}/{images[1]}")
        same.append(fields[1] == "1")
        lines.append(line)
    return _with_folds(path, first, second, same, lines, _folds_for(same))


def _folds_for(same: list[bool]) -> int:
    """10 stratified folds for a list without declared folds, one when a kind has fewer than 10 pairs."""
    positives = sum(same)
    return NUM_FOLDS if min(positives, len(same) - positives) >= NUM_FOLDS else 1


def read_pair_list(path: Path) -> PairList:
    """An EE488B list (its first line holds a comma) or an LFW pair file, by the look of the first line."""
    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such pair list")
    first_line = next((text for _, text in _read_lines(path)), "")
    return read_label_pairs(path) if "," in first_line else read_lfw_pairs(path)


def check_images_exist(pairs: PairList, image_root: Path) -> None:
    """``FfemError`` naming the first pair whose image is missing under ``image_root`` (and how many are).

    A path leaving ``image_root`` (absolute, ``..``, a symlink out) is refused
    first (``images.path_under``).
    """
    missing = []
    checked: dict[str, bool] = {}
    for first, second, line in zip(pairs.first, pairs.second, pairs.lines, strict=True):
        for name in (first, second):
            if name not in checked:
                try:
                    checked[name] = path_under(image_root, name).is_file()
                except ImageReadError as exc:
                    raise FfemError(
                        f"{pairs.source} line {line}: image {name}: {exc.detail}; eval reads only under {image_root}"
                    ) from None
            if not checked[name]:
                missing.append((line, name))
    if missing:
        line, name = missing[0]
        more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise FfemError(f"{pairs.source} line {line}: image {name} not found under {image_root}{more}")
