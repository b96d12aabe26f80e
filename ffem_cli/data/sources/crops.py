"""A folder of face crops (``pack --crops``): the whole image is the face, no detector runs.

Layout ``ROOT/<identity>/<image>``, or ``ROOT/<group>/<identity>/<image>``
(BUPT-Balancedface style, found when no image sits at the first level). For
already cropped or aligned sets: CASIA-WebFace 112x112, lfw-112x112, EE488B
crops. A JPEG already at the pack size is copied through; others are
resized to it. Files are read through ``images.path_under`` (a symlink
leaving the folder only with ``follow_symlinks``); a name that is not UTF-8
(which the pack's ``image/path`` cannot hold) goes to the rejects as
``bad-name``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ffem_cli.data.sources import Record, Source, SourceTable
from ffem_cli.errors import FfemError
from ffem_cli.images import (
    is_image_name,
    is_utf8_name,
    path_under,
    read_image_bytes,
    scan_identity_folder,
    shown_name,
)


def folder_depth(root: Path) -> int:
    """2 when images sit only at ``ROOT/*/*/<image>``, else 1."""
    if not root.is_dir():
        raise FfemError(f"{root}: not a folder")
    top = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    direct = any(is_image_name(f) for d in top for f in d.iterdir())
    return 1 if direct or not top else 2


class CropsSource(Source):
    """Face crops in identity folders; ``ref`` is a position in the sorted file list."""

    format = "crops"

    def __init__(self, path: Path, follow_symlinks: bool = False):
        super().__init__(path)
        self.follow_symlinks = follow_symlinks
        self.keys: dict[int, str] = {}

    def describe(self) -> dict:
        """Fingerprint: sha256 of the sorted ``path<TAB>size`` lines (not of every image's bytes; -1: unreadable)."""
        lines = "".join(f"{key}\t{_size(self.path / key)}\n" for key in self.keys.values())
        return {
            "path": str(self.path.resolve()),
            "format": self.format,
            "fingerprint": hashlib.sha256(lines.encode()).hexdigest(),
        }

    def table(self, workers: int = 1) -> SourceTable:
        folder = scan_identity_folder(self.path, depth=folder_depth(self.path))
        paths = [key for key in folder.paths if is_utf8_name(key)]
        self.keys = dict(enumerate(paths))
        identities = sorted({key.rsplit("/", 1)[0] for key in paths})  # those with a usable file: no label gaps
        label_of = {name: label for label, name in enumerate(identities)}
        group_names = sorted({p.split("/")[0] for p in paths}) if folder.depth == 2 else []
        groups = (
            np.array([group_names.index(p.split("/")[0]) for p in paths], np.int32)
            if group_names
            else np.full(len(paths), -1, np.int32)
        )
        return SourceTable(
            refs=np.arange(len(paths), dtype=np.int64),
            labels=np.array([label_of[key.rsplit("/", 1)[0]] for key in paths], np.int64),
            groups=groups,
            group_names=group_names,
            names={label: name for name, label in label_of.items()},
            rejected=[
                {"path": shown_name(key), "reason": "bad-name", "detail": "the file name is not UTF-8; rename it"}
                for key in folder.paths
                if not is_utf8_name(key)
            ],
        )

    def for_refs(self, refs: np.ndarray) -> CropsSource:
        part = CropsSource(self.path, self.follow_symlinks)
        part.keys = {int(ref): self.keys[int(ref)] for ref in refs}
        return part

    def key(self, ref: int) -> str:
        return self.keys[ref]

    def read(self, ref: int) -> Record:
        key = self.keys[ref]
        return Record(key=key, data=read_image_bytes(path_under(self.path, key, self.follow_symlinks)))


def _size(path: Path) -> int:
    """``path``'s size in bytes through symlinks, ``-1`` when it cannot be read (its read reports why)."""
    try:
        return path.stat().st_size
    except OSError:
        return -1
