"""``image_list.json`` (written by ``ffem detect`` or ``ffem convert``) and its photos under ROOT.

The list is streamed entry by entry into numpy columns
(``image_list.scan_image_list``; a million entries are never a million
Python objects) and validated whole before any work (schema, labels, every
photo's header). Boxes crossing the image border are kept and cropped with the
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
    CLIPPED,
    OUTSIDE,
    ListedFaces,
    check_listed_images,
    fingerprint,
    label_map_path,
    load_label_map,
    scan_image_list,
)
from ffem_cli.data.sources import Record, Source, SourceTable
from ffem_cli.errors import FfemError
from ffem_cli.images import ImageRoot


class ImageListSource(Source):
    """An image list; ``ref`` is a position in its sorted keys (without the rejected faces)."""

    format = "image-list"

    def __init__(
        self,
        path: Path,
        root: Path | None,
        strict_boxes: bool = False,
        relabel: bool = False,
        follow_symlinks: bool = False,
    ):
        super().__init__(path)
        if root is None:
            raise FfemError(f"{path}: an image list needs --root, the folder its image paths are relative to")
        self.root = root
        self.strict_boxes = strict_boxes
        self.relabel = relabel
        self.follow_symlinks = follow_symlinks
        self.faces: ListedFaces | None = None  # the kept faces in ref order (or, in a job's copy, its refs')
        self.refs = np.zeros(0, np.int64)  # sorted: the refs ``faces`` holds, row by row
        self.image_root: ImageRoot | None = None  # the path rule, each folder checked once

    def describe(self) -> dict:
        return {
            "path": str(self.path.resolve()),
            "format": self.format,
            "fingerprint": fingerprint(self.path),
            "root": str(self.root.resolve()),
        }

    def table(self, workers: int = 1) -> SourceTable:
        listed = scan_image_list(self.path, allow_gaps=self.relabel)
        fits = check_listed_images(
            listed,
            self.root,
            strict_boxes=self.strict_boxes,
            follow_symlinks=self.follow_symlinks,
            processes=workers,
        )
        order = np.argsort(listed.keys, kind="stable")  # UTF-8 byte order = the keys' code point order
        rejected = [
            {"path": listed.key(row), "reason": "box-outside", "detail": text} for row, text in fits.outside.items()
        ]
        self.faces = listed.take(order[fits.fit[order] != OUTSIDE])
        self.refs = np.arange(len(self.faces), dtype=np.int64)
        self.image_root = ImageRoot(self.root, self.follow_symlinks)
        del listed, order
        used = np.unique(self.faces.groups[self.faces.groups >= 0]).tolist()
        group_names = sorted(self.faces.group_names[code] for code in used)
        recode = np.full(len(self.faces.group_names) + 1, -1, np.int32)  # the last one: no group (-1)
        for code in used:
            recode[code] = group_names.index(self.faces.group_names[code])
        names_path = label_map_path(self.path)
        names = load_label_map(names_path) if names_path.is_file() else {}
        return SourceTable(
            refs=self.refs.copy(),
            labels=self.faces.labels.copy(),
            groups=recode[self.faces.groups],
            group_names=group_names,
            names={label: name for name, label in names.items()},
            lacks_landmarks=_landmarks_unusable(self.faces),
            clipped=int((fits.fit == CLIPPED).sum()),
            rejected=rejected,
        )

    def for_refs(self, refs: np.ndarray) -> ImageListSource:
        part = object.__new__(ImageListSource)
        part.__dict__.update(self.__dict__)
        part.refs = np.sort(np.asarray(refs, np.int64))
        part.faces = self.faces.take(np.searchsorted(self.refs, part.refs))
        return part

    def _row(self, ref: int) -> int:
        return int(np.searchsorted(self.refs, ref))

    def key(self, ref: int) -> str:
        return self.faces.key(self._row(ref))

    def read(self, ref: int) -> Record:
        entry = self.faces.entry(self._row(ref))
        key = self.key(ref)
        path = self.image_root.path(key)
        return Record(key=key, path=path, box=entry.box, landmarks=entry.landmarks)


def _landmarks_unusable(faces: ListedFaces) -> str | None:
    """Why ``--align`` cannot use these faces' landmarks (the first face without usable ones), or ``None``."""
    missing = np.flatnonzero(~faces.has_landmarks())
    if len(missing):
        return f"entry {faces.key(int(missing[0]))!r} has no landmarks"
    for row in range(len(faces)):
        problem = landmark_problem(faces.landmarks[row])
        if problem:
            return f"entry {faces.key(row)!r}: {problem}"
    return None
