"""Face data sources for ``ffem pack``: each format is one module that yields records.

A source is opened and checked in the main process, where it gives a
``SourceTable``: one row per face as numpy arrays (never a Python object per
face), holding the source's own label of each face, its group and a ``ref``
(an int64 the source understands: a byte offset, a position in a list).
Workers call ``source.read(ref)`` for the ``Record``: the image bytes (or
file), the box and landmarks. Shaping (``data.shaping``) sees only tables; the
packer (``data.pack``) sees only records.

Formats: ``image_list`` (``image_list.json`` + photos under ``--root``),
``recordio`` (insightface ``train.rec``/``.idx``/``property``),
``seed_tfrecord`` (the seed FFEM ``.tfrecord``: whole JPEG + box) and
``crops`` (a folder of face crops, ``--crops``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Record:
    """One face as a worker reads it.

    ``key``: its name in the pack (``image/path``) and in skip reports.
    ``data``: encoded image bytes, or ``None`` when ``path`` names the file.
    ``box``: ``(x1, y1, x2, y2)`` pixels, or ``None`` when the whole image is
    the face. ``landmarks``: ``(5, 2)`` float pixels or ``None``.
    """

    key: str
    data: bytes | None = None
    path: Path | None = None
    box: tuple[int, int, int, int] | None = None
    landmarks: np.ndarray | None = None


@dataclass
class SourceTable:
    """The faces of a source, one row each (all arrays have length ``rows``).

    ``refs`` (int64): what ``read`` takes. ``labels`` (int64): the source's own
    labels. ``groups`` (int32): index into ``group_names``, ``-1`` for none.
    ``names``: identity name by label (labels missing here are named by their
    number). ``lacks_landmarks``: why ``--align`` cannot be used (``None``
    when every face has landmarks). ``clipped``: boxes crossing the image
    border (kept, padded).
    ``rejected``: faces left out before packing, ``{"path", "reason", "detail"}``.
    """

    refs: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    group_names: list[str] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    lacks_landmarks: str | None = "it holds no landmarks"
    clipped: int = 0
    rejected: list[dict] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.refs)

    def name_of(self, label: int) -> str:
        return self.names.get(label, str(label))


class Source:
    """Base of the formats: ``describe`` for the manifest, ``table`` once, ``read`` per face."""

    format = ""

    def __init__(self, path: Path):
        self.path = path

    def describe(self) -> dict:
        """``{"path", "format", "fingerprint"}`` for the manifest (fingerprint: sha256 hex)."""
        raise NotImplementedError

    def table(self, workers: int = 1) -> SourceTable:
        """Open and check the source; ``FfemError`` naming the first problem.

        ``workers``: processes the checks may use (``pack --workers``).
        """
        raise NotImplementedError

    def key(self, ref: int) -> str:
        """The name of face ``ref`` (``Record.key``), known without reading it."""
        raise NotImplementedError

    def read(self, ref: int) -> Record:
        """The record ``ref``; ``ImageReadError`` when its bytes cannot be read."""
        raise NotImplementedError

    def for_refs(self, refs: np.ndarray) -> Source:
        """A copy that can read ``refs`` (what a worker job carries; the default is ``self``)."""
        return self


def open_source(
    path: Path,
    root: Path | None = None,
    crops: bool = False,
    strict_boxes: bool = False,
    relabel: bool = False,
    follow_symlinks: bool = False,
) -> Source:
    """The source for a ``pack`` SOURCE argument, by what the path holds.

    ``*.json``: image list (needs ``root``). A ``.rec`` file or a folder with
    ``train.rec``: insightface RecordIO. A ``.tfrecord`` file or a folder of
    them: seed FFEM TFRecords. Any other folder with ``crops``: face crops.
    The image paths of lists and crop folders must stay inside their folder
    (``images.path_under``; symlinks leaving it only with ``follow_symlinks``);
    RecordIO and TFRecord files are read as the user named them.
    """
    from ffem_cli.data.packdir import PackDir
    from ffem_cli.data.sources.crops import CropsSource
    from ffem_cli.data.sources.image_list import ImageListSource
    from ffem_cli.data.sources.recordio import RecordIOSource
    from ffem_cli.data.sources.seed_tfrecord import SeedTFRecordSource
    from ffem_cli.errors import FfemError

    path = Path(path)
    if not path.exists():
        raise FfemError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix == ".json":
        return ImageListSource(path, root, strict_boxes, relabel, follow_symlinks)
    if path.suffix == ".rec" or (path.is_dir() and (path / "train.rec").exists()):
        return RecordIOSource(path)
    if path.is_dir() and PackDir(path).manifest_path.exists():
        raise FfemError(f"{path}: is an ffem pack already (train reads it as --data)")
    if path.suffix == ".tfrecord" or (path.is_dir() and not crops and any(path.glob("*.tfrecord"))):
        return SeedTFRecordSource(path, strict_boxes)
    if path.is_dir() and crops:
        return CropsSource(path, follow_symlinks)
    what = "folder" if path.is_dir() else "file"
    raise FfemError(
        f"{path}: not a source pack reads (image_list.json, train.rec, seed .tfrecord, "
        f"or a folder of face crops with --crops); got a {what}"
    )
