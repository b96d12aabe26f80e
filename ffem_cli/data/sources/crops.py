"""A folder of face crops (``pack --crops``): the whole image is the face, no detector runs.

Layout ``ROOT/<identity>/<image>``, or ``ROOT/<group>/<identity>/<image>``
(BUPT-Balancedface style, found when no image sits at the first level). For
already cropped or aligned sets: CASIA-WebFace 112x112, lfw-112x112, EE488B
crops. A JPEG already at the pack size is copied through; others are
resized to it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ffem_cli.data.sources import Record, Source, SourceTable
from ffem_cli.errors import FfemError
from ffem_cli.images import ImageReadError, is_image_file, scan_identity_folder


def folder_depth(root: Path) -> int:
    """2 when images sit only at ``ROOT/*/*/<image>``, else 1."""
    if not root.is_dir():
        raise FfemError(f"{root}: not a folder")
    top = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    direct = any(is_image_file(f) for d in top for f in d.iterdir())
    return 1 if direct or not top else 2


class CropsSource(Source):
    """Face crops in identity folders; ``ref`` is a position in the sorted file list."""

    format = "crops"

    def __init__(self, path: Path):
        super().__init__(path)
        self.keys: dict[int, str] = {}

    def describe(self) -> dict:
        """Fingerprint: sha256 of the sorted ``path<TAB>size`` lines (not of every image's bytes)."""
        lines = "".join(f"{key}\t{(self.path / key).stat().st_size}\n" for key in self.keys.values())
        return {
            "path": str(self.path.resolve()),
            "format": self.format,
            "fingerprint": hashlib.sha256(lines.encode()).hexdigest(),
        }

    def table(self) -> SourceTable:
        folder = scan_identity_folder(self.path, depth=folder_depth(self.path))
        self.keys = dict(enumerate(folder.paths))
        group_names = sorted({p.split("/")[0] for p in folder.paths}) if folder.depth == 2 else []
        groups = (
            np.array([group_names.index(p.split("/")[0]) for p in folder.paths], np.int32)
            if group_names
            else np.full(len(folder.paths), -1, np.int32)
        )
        return SourceTable(
            refs=np.arange(len(folder.paths), dtype=np.int64),
            labels=np.asarray(folder.labels, np.int64),
            groups=groups,
            group_names=group_names,
            names={label: name for name, label in folder.label_map.items()},
        )

    def for_refs(self, refs: np.ndarray) -> CropsSource:
        part = CropsSource(self.path)
        part.keys = {int(ref): self.keys[int(ref)] for ref in refs}
        return part

    def read(self, ref: int) -> Record:
        key = self.keys[ref]
        try:
            data = (self.path / key).read_bytes()
        except OSError as exc:
            raise ImageReadError(self.path / key, "missing", exc.strerror or str(exc)) from None
        return Record(key=key, data=data)

