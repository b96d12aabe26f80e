"""Finding and reading face photos, shared by detect, pack, eval and embed.

An *identity folder* is ``ROOT/<identity>/<image>``: one sub-folder per
person, images directly inside it. Labels are ``0..N-1`` in sorted order of
the identity names. Files nested deeper than one level are an error (the
layout would be ambiguous); other files (``.txt``, hidden files) are ignored.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ffem_cli.errors import FfemError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is an image extension (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class IdentityFolder:
    """The images of an identity folder.

    ``paths`` are POSIX paths relative to ``root`` (``"<identity>/<file>"``,
    or ``"<group>/<identity>/<file>"`` at ``depth`` 2), sorted; ``labels[i]``
    is the label of ``paths[i]``; ``label_map`` maps identity name (the path
    of its folder under ``root``: ``"<identity>"`` or ``"<group>/<identity>"``)
    to label.
    """

    root: Path
    paths: list[str]
    labels: list[int]
    label_map: dict[str, int]
    depth: int = 1


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_identity_folder(root: str | Path, depth: int = 1) -> IdentityFolder:
    """List ``root/<identity>/<image>`` (``depth=2``: ``root/<group>/<identity>/<image>``).

    Errors (``FfemError``): ``root`` missing or not a folder, no identity
    sub-folders, no images at all, or an image nested deeper than the layout.
    Identity folders without images are skipped (they get no label).
    """
    root = Path(root)
    if not root.is_dir():
        raise FfemError(f"{root}: not a folder")
    layout = "ROOT/<identity>/" if depth == 1 else "ROOT/<group>/<identity>/"
    ident_dirs = _visible_dirs(root) if depth == 1 else [d for g in _visible_dirs(root) for d in _visible_dirs(g)]
    identities: dict[str, list[str]] = {}
    for ident_dir in ident_dirs:
        name = ident_dir.relative_to(root).as_posix()
        files = []
        for item in sorted(ident_dir.iterdir()):
            if item.is_dir() and not item.name.startswith("."):
                nested = next((p for p in item.rglob("*") if is_image_file(p)), None)
                if nested is not None:
                    raise FfemError(
                        f"{nested.relative_to(root).as_posix()}: images must sit directly in {layout}, not deeper"
                    )
            elif is_image_file(item):
                files.append(f"{name}/{item.name}")
        if files:
            identities[name] = files
    if not identities:
        loose = next((p for p in root.iterdir() if is_image_file(p)), None)
        hint = f" (found {loose.name} at the top level: put each person's images in {layout})" if loose else ""
        raise FfemError(f"{root}: no images found in {layout}<image> layout{hint}")
    label_map = {name: label for label, name in enumerate(sorted(identities))}
    paths, labels = [], []
    for name, files in sorted(identities.items()):
        paths.extend(files)
        labels.extend([label_map[name]] * len(files))
    return IdentityFolder(root=root, paths=paths, labels=labels, label_map=label_map, depth=depth)


class ImageReadError(Exception):
    """An image that cannot be decoded; ``reason`` is a short tag for reports."""

    def __init__(self, path: Path, reason: str, detail: str):
        super().__init__(f"{path}: {reason} ({detail})")
        self.path = path
        self.reason = reason
        self.detail = detail


def open_rgb(path: str | Path) -> Image.Image:
    """Decode an image file to an RGB PIL image (pixels loaded, file closed).

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped);
    EXIF orientation is applied. Raises ``ImageReadError`` with reason
    ``missing`` or ``corrupt``. Pack crops PIL images directly, which saves
    two full-image copies per photo over ``read_rgb``.
    """
    path = Path(path)
    try:
        image = Image.open(path)
        image.load()  # reads the pixels and closes the file of a single-frame image
        ImageOps.exif_transpose(image, in_place=True)
        return image if image.mode == "RGB" else image.convert("RGB")
    except FileNotFoundError as exc:
        raise ImageReadError(path, "missing", "no such file") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, "corrupt", str(exc).split("\n")[0]) from exc


def decode_rgb(data: bytes, name: str) -> Image.Image:
    """``open_rgb`` for encoded image bytes (from a RecordIO or TFRecord); ``name`` for errors."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image if image.mode == "RGB" else image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(Path(name), "corrupt", str(exc).split("\n")[0]) from exc


def read_rgb(path: str | Path) -> np.ndarray:
    """``open_rgb`` as an RGB ``uint8`` array of shape ``(H, W, 3)``."""
    return np.asarray(open_rgb(path), dtype=np.uint8)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a baseline/progressive JPEG from its SOF marker, without decoding.

    ``None`` when ``data`` is not a JPEG, is damaged before its SOF, or carries
    an EXIF block (its orientation could turn the pixels, so it must be decoded).
    """
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xE1 and data[pos + 4 : pos + 8] == b"Exif":
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        pos += 2 + length
    return None
