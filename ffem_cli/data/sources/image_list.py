"""``image_list.json`` (written by ``ffem detect`` or ``ffem convert``) and its photos under ROOT.

The list is validated whole before any work (schema, labels, every photo's
header). Boxes crossing the image border are kept and cropped with the
outside padded (counted as clipped); boxes with no pixel inside the image go
to the rejects; ``strict_boxes`` makes either an error instead.
``label_map.json`` beside the list names the identities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


class ImageListSource(Source):
    """An image list; ``ref`` is a position in its sorted keys."""

    format = "image-list"

    def __init__(self, path: Path, root: Path | None, strict_boxes: bool = False, relabel: bool = False):
        super().__init__(path)
        if root is None:
            raise FfemError(f"{path}: an image list needs --root, the folder its image paths are relative to")
        self.root = root
        self.strict_boxes = strict_boxes
        self.relabel = relabel
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
        boxes = check_against_images(entries, self.root, strict_boxes=self.strict_boxes)
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
            lacks_landmarks=next(
                (f"entry {k!r} has no landmarks" for k in keys if entries[k].landmarks is None), None
            ),
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

    def read(self, ref: int) -> Record:
        key, entry = self.items[ref]
        return Record(key=key, path=self.root / key, box=entry.box, landmarks=entry.landmarks)
