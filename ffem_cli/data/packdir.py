"""The pack directory: the one place that knows the files of an ``ffem pack`` output and their checks.

Layout (written by ``data.pack``, read by ``data.pipeline``, ``pack_check``,
``inspect``, the trainer and export's calibration)::

    faces-00000-of-00016.tfrecord …   one tf.train.Example per face:
                                      image/encoded (JPEG), image/label (int64),
                                      image/path (bytes, the image-list key)
    index.npz                         per example (index order = shard 0 first, then file
                                      order): shard (int32), offset (int64, the payload's
                                      first byte), length (int64, payload bytes), label (int32)
    rejects.json                      faces left out before packing, with reasons
    manifest.json                     written LAST: settings, sources, shaping, counts,
                                      label_map, checksums, skips
    pack-progress.json, faces-….tfrecord.done
                                      only while a pack is being written (see data.pack)

``PackDir(path)`` touches nothing on disk when created. ``manifest()`` reads
and checks ``manifest.json`` once per object; ``index()`` loads and checks
``index.npz`` once per object; so a caller that passes one ``PackDir``
around (the trainer) parses each file once. Every check raises one
``FfemError`` line naming the file and what is wrong.
"""

from __future__ import annotations

import fnmatch
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffem_cli import atomic
from ffem_cli.errors import FfemError

MANIFEST = "manifest.json"
INDEX = "index.npz"
REJECTS = "rejects.json"
PROGRESS = "pack-progress.json"
DONE_SUFFIX = ".done"
FORMAT = "ffem-pack/1"
REQUIRED_KEYS = ("image_size", "crop", "num_examples", "num_classes", "shards")
INDEX_KEYS = ("shard", "offset", "length", "label")
REPACK_HINT = "re-run ffem pack"


def shard_name(index: int, count: int) -> str:
    """``faces-00003-of-00016.tfrecord``."""
    return f"faces-{index:05d}-of-{count:05d}.tfrecord"


def is_pack_file(name: str) -> bool:
    """True for a name a pack folder holds: manifest, index, rejects, progress, shards, their records, temporaries."""
    return (
        name in (MANIFEST, INDEX, REJECTS, PROGRESS)
        or fnmatch.fnmatch(name, "faces-*-of-*.tfrecord")
        or fnmatch.fnmatch(name, f"faces-*-of-*.tfrecord{DONE_SUFFIX}")
        or name.startswith(atomic.TMP_PREFIX)
    )


def corrupted(where, what: str) -> FfemError:
    return FfemError(f"{where}: corrupted pack: {what}; {REPACK_HINT}")


@dataclass(frozen=True)
class PackDir:
    """Paths of one pack directory, with its manifest and index read (and checked) once."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @classmethod
    def of(cls, pack: PackDir | str | Path) -> PackDir:
        """``pack`` itself when it is a ``PackDir`` (keeping what it has read), else a new one."""
        return pack if isinstance(pack, PackDir) else cls(pack)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def index_path(self) -> Path:
        return self.path / INDEX

    @property
    def rejects_path(self) -> Path:
        return self.path / REJECTS

    @property
    def progress_path(self) -> Path:
        return self.path / PROGRESS

    def shard_path(self, name: str) -> Path:
        return self.path / name

    def done_path(self, name: str) -> Path:
        """The ``.done`` record of the shard ``name`` (only while packing)."""
        return self.path / f"{name}{DONE_SUFFIX}"

    @property
    def is_finished(self) -> bool:
        """A manifest is there (it is written last, so the pack is complete)."""
        return self.manifest_path.is_file()

    @property
    def shard_paths(self) -> list[Path]:
        """The shards the (checked) manifest lists, in shard order."""
        return [self.path / shard["file"] for shard in self.manifest()["shards"]]

    @property
    def label_names(self) -> dict[int, str]:
        """Identity name by label, from the manifest's ``label_map`` (empty when it has none)."""
        return {int(label): str(name) for name, label in (self.manifest().get("label_map") or {}).items()}

    def read_manifest_json(self, hint: str = "") -> dict:
        """``manifest.json`` as a JSON object, unchecked (resume, inspect); ``hint`` ends the error line."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FfemError(f"{self.manifest_path}: unreadable manifest ({exc}){hint}") from None
        if not isinstance(manifest, dict):
            raise FfemError(f"{self.manifest_path}: malformed manifest (not a JSON object){hint}")
        return manifest

    def manifest(self) -> dict:
        """The checked manifest, read once per object: required keys, field types
        (``check_manifest_fields``), every listed shard present."""
        if "_manifest" in self.__dict__:
            return self.__dict__["_manifest"]
        if not self.is_finished:
            raise FfemError(f"{self.path}: not a finished pack (no {MANIFEST}); run ffem pack first")
        manifest = self.read_manifest_json()
        missing = [key for key in REQUIRED_KEYS if key not in manifest]
        if missing:
            raise FfemError(f"{self.manifest_path}: malformed manifest (missing {', '.join(missing)})")
        check_manifest_fields(manifest, self.manifest_path)
        for shard in manifest["shards"]:
            if not (self.path / shard["file"]).is_file():
                raise FfemError(f"{self.path}: shard {shard['file']} listed in the manifest is missing")
        self.__dict__["_manifest"] = manifest
        return manifest

    def read_index(self, hint: str = f"; {REPACK_HINT}") -> dict[str, np.ndarray]:
        """The ``INDEX_KEYS`` arrays of ``index.npz``, unchecked; ``hint`` ends the error line."""
        try:
            with np.load(self.index_path, allow_pickle=False) as data:
                return {name: data[name] for name in INDEX_KEYS}
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FfemError(f"{self.index_path}: unreadable pack index ({reason}){hint}") from exc

    def index(self) -> dict[str, np.ndarray]:
        """The index arrays, checked against the manifest (``check_index``); loaded once per object."""
        if "_index" not in self.__dict__:
            index = self.read_index()
            check_index(index, self.manifest(), self.index_path)
            self.__dict__["_index"] = index
        return self.__dict__["_index"]


def check_manifest_fields(manifest: dict, path: Path) -> None:
    """Types and ranges of the manifest fields readers use; shard names stay inside the pack."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise FfemError(f"{path}: malformed manifest ({what})")

    def count(name: str, low: int) -> None:
        value = manifest[name]
        need(type(value) is int and value >= low, f"{name} must be an integer >= {low}, got {value!r}")

    count("image_size", 1)
    count("num_examples", 0)
    count("num_classes", 1)
    need(manifest["crop"] in ("margin", "align"), f"crop must be 'margin' or 'align', got {manifest['crop']!r}")
    margin = manifest.get("margin", 0.0)
    need(type(margin) in (int, float) and np.isfinite(margin), f"margin must be a number, got {margin!r}")
    shards = manifest["shards"]
    need(isinstance(shards, list) and shards, "shards must be a non-empty list")
    for shard in shards:
        need(isinstance(shard, dict), f"a shard entry must be an object, got {shard!r}")
        name = shard.get("file")
        need(
            isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name,
            f"shard file must be a plain file name in the pack, got {name!r}",
        )
        need(
            type(shard.get("count")) is int and shard["count"] >= 0,
            f"shard {name} count must be an integer >= 0, got {shard.get('count')!r}",
        )
        need(isinstance(shard.get("sha256", ""), str), f"shard {name} sha256 must be a string")
    need(
        sum(s["count"] for s in shards) == manifest["num_examples"],
        f"the shard counts add up to {sum(s['count'] for s in shards)}, not num_examples = {manifest['num_examples']}",
    )


def check_index(index: dict[str, np.ndarray], manifest: dict, path: Path) -> None:
    """``index.npz`` agrees with the manifest (shapes, dtypes, shard numbers, label range, counts)."""
    rows = manifest["num_examples"]
    for key in INDEX_KEYS:
        array = index[key]
        if array.ndim != 1 or len(array) != rows or not np.issubdtype(array.dtype, np.integer):
            raise corrupted(path, f"'{key}' must be {rows} integers, got {array.dtype} {array.shape}")
    shards = manifest["shards"]
    if rows and (index["shard"].min() < 0 or index["shard"].max() >= len(shards)):
        raise corrupted(path, f"shard numbers outside 0..{len(shards) - 1}")
    labels = index["label"]
    if rows and (labels.min() < 0 or labels.max() >= manifest["num_classes"]):
        bad = labels[(labels < 0) | (labels >= manifest["num_classes"])][0]
        raise corrupted(path, f"label {bad} is outside 0..{manifest['num_classes'] - 1} (num_classes)")
    if (index["offset"] < 0).any() or (index["length"] < 0).any():
        raise corrupted(path, "negative record offsets or lengths")
    counts = np.bincount(index["shard"], minlength=len(shards))
    for shard, held in zip(shards, counts.tolist(), strict=True):
        if held != shard["count"]:
            raise corrupted(path, f"{held} records of {shard['file']}, the manifest says {shard['count']}")
