"""``image_list.json`` (written by ``ffem detect`` or ``ffem convert``) and its photos under ROOT.

The list is validated whole before any work (schema, labels, every photo's
header). Boxes crossing the image border are kept and cropped with the
outside padded (counted as clipped); boxes with no pixel inside the image go
to the rejects; ``strict_boxes`` makes either an error instead. Image
paths follow ``images.path_under``. ``<list stem>.label_map.json`` beside
the list names the identities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffem_cli.data.crop import landmark_problem
from ffem_cli.data.image_list import (
    FaceEntry,
    check_against_images,
    fingerprint,
    label_map_path,
    load_image_list,
    load_label_map,
)
from ffem_cli.data.sources import Record, Source, SourceTable
from ffem_cli.errors import FfemError
from ffem_cli.images import path_under


class ImageListSource(Source):
    """An image list; ``ref`` is a position in its sorted keys."""

    format = "image-list"

    def __init__(
        self, path: Path, root: Path | None, strict_boxes: bool = False, relabel: bool = False,
        follow_symlinks: bool = False,
    ):
        super().__init__(path)
        if root is None:
            raise FfemError(f"{path}: an image list needs --root, the folder its image paths are relative to")
        self.root = root
        self.strict_boxes = strict_boxes
        self.relabel = relabel
        self.follow_symlinks = follow_symlinks
        self.items: dict[int, tuple[str, FaceEntry]] = {}

    def describe(self) -> dict:
        return {
            "path": str(self.path.resolve()),
            "format": self.format,
            "fingerprint": fingerprint(self.path),
            "root": str(self.root.resolve()),
        }

    def table(self) -> SourceTable:
        entries = load_image_list(self.path, allow_gaps=self.relabel)
        boxes = check_against_images(
            entries, self.root, strict_boxes=self.strict_boxes, follow_symlinks=self.follow_symlinks
        )
        keys = [key for key in sorted(entries) if key not in boxes.outside]
        self.items = {i: (key, entries[key]) for i, key in enumerate(keys)}
        group_names = sorted({entries[k].group for k in keys if entries[k].group is not None})
        code = {name: i for i, name in enumerate(group_names)}
        names_path = label_map_path(self.path)
        names = load_label_map(names_path) if names_path.is_file() else {}
        return SourceTable(
            refs=np.arange(len(keys), dtype=np.int64),
            labels=np.array([entries[k].label for k in keys], np.int64),
            groups=np.array([code.get(entries[k].group, -1) for k in keys], np.int32),
            group_names=group_names,
            names={label: name for name, label in names.items()},
            lacks_landmarks=_landmarks_unusable(keys, entries),
            clipped=len(boxes.clipped),
            rejected=[
                {"path": key, "reason": "box-outside", "detail": text}
                for key, text in boxes.outside.items()
            ],
        )

    def for_refs(self, refs: np.ndarray) -> ImageListSource:
        part = object.__new__(ImageListSource)
        part.__dict__.update(self.__dict__)
        part.items = {int(ref): self.items[int(ref)] for ref in refs}
        return part

    def key(self, ref: int) -> str:
        return self.items[ref][0]

    def read(self, ref: int) -> Record:
        key, entry = self.items[ref]
        path = path_under(self.root, key, self.follow_symlinks)
        return Record(key=key, path=path, box=entry.box, landmarks=entry.landmarks)


def _landmarks_unusable(keys: list[str], entries: dict[str, FaceEntry]) -> str | None:
    """Why ``--align`` cannot use these entries' landmarks (the first entry without usable ones), or ``None``."""
    missing = next((key for key in keys if entries[key].landmarks is None), None)
    if missing is not None:
        return f"entry {missing!r} has no landmarks"
    for key in keys:
        problem = landmark_problem(entries[key].landmarks)
        if problem:
            return f"entry {key!r}: {problem}"
    return None
