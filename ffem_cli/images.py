"""Finding and reading face photos, shared by detect, pack, eval and embed.

An *identity folder* is ``ROOT/<identity>/<image>``: one sub-folder per
person, images directly inside it. Labels are ``0..N-1`` in sorted order of
the identity names. Files nested deeper than one level are an error (the
layout would be ambiguous); other files (``.txt``, hidden files) are ignored.

Reading is guarded, for every command alike:

* ``path_under`` is the one input-path rule: a path must stay inside its
  root (no absolute path, no ``..``, no symlink whose target leaves the
  root unless ``follow_symlinks``); a broken link reads as ``missing``, a
  link loop as ``symlink-loop``.
* an image whose header claims more than ``max_pixels`` (default
  ``DEFAULT_MAX_PIXELS``, ~179 megapixels, Pillow's own bomb limit; the
  ``--max-pixels`` of ``ffem detect``) is rejected as ``too-large`` before
  anything is decoded. That check replaces Pillow's (``Image.MAX_IMAGE_PIXELS``
  is lifted when this module loads), so no raw ``DecompressionBombWarning``
  reaches the console;
* 16-bit greyscale PNGs are scaled to 8 bits (``value / 257``), not clipped.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ffem_cli.errors import FfemError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # the threshold of Pillow's DecompressionBombError
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
HEADER_BYTES = 65536  # read for a JPEG header check; longer headers (big EXIF/ICC blocks) go to PIL

Image.MAX_IMAGE_PIXELS = None  # ``max_pixels`` decides instead, before decoding


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is an image extension (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def is_image_name(path: Path) -> bool:
    """True for a visible name with an image extension that is a file or a symlink (even broken or looping)."""
    return (
        not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_EXTENSIONS
        and (path.is_symlink() or path.is_file())
    )


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
    Symlinked images are listed even when broken or looping, so that
    reading them reports why (``path_under``, ``open_rgb``).
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
            elif is_image_name(item):
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


def is_utf8_name(rel: str) -> bool:
    """False for a path holding bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_name(rel: str) -> str:
    """``rel`` with its non-UTF-8 bytes written as ``\\xNN`` (for the rejects file)."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_under(root: str | Path, rel: str, follow_symlinks: bool = False) -> Path:
    """``root / rel``, checked to stay inside ``root``; the input-path rule of every command.

    ``rel`` must be relative without ``..``; unless ``follow_symlinks``, its
    real path (symlinks resolved) must lie inside the real path of ``root``.
    Raises ``ImageReadError`` with reason ``outside-root`` (``bad-name`` for a
    NUL character). Loops over many paths use one ``ImageRoot`` instead.
    """
    return ImageRoot(root, follow_symlinks).path(rel)


class ImageRoot:
    """``path_under`` for many paths below one ``root``: each folder is checked once, then each file.

    ``path(rel)`` gives the same answer and the same errors as
    ``path_under(root, rel, follow_symlinks)``. The folders' answers are kept
    (one entry per folder of the paths asked for); a file costs one ``lstat``.
    """

    def __init__(self, root: str | Path, follow_symlinks: bool = False):
        self.root = Path(root)
        self.follow_symlinks = follow_symlinks
        self._root_text = str(root)
        self.real_root = os.path.realpath(root)
        self._folders: dict[str, bool] = {}  # folder below the root -> it holds a symlink (resolving inside)

    def path(self, rel: str) -> Path:
        if "\0" in rel:
            raise ImageReadError(self.root, "bad-name", f"the path {rel!r} holds a NUL character")
        path = Path(self._root_text, rel)
        parts = tuple(part for part in rel.split("/") if part not in ("", "."))  # PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts:
            raise ImageReadError(path, "outside-root", "the path must be relative to ROOT, without '..'")
        if not self.follow_symlinks:
            real = self._outside(parts)
            if real is not None:
                raise ImageReadError(
                    path, "outside-root", f"a symlink to {real}, outside ROOT (--follow-symlinks allows it)"
                )
        return path

    def _outside(self, parts: tuple[str, ...]) -> str | None:
        """The real path of ``real_root/parts…`` when it leaves ``real_root``, else ``None``.

        Each component below the root is ``lstat``-ed (a folder once per
        ``ImageRoot``); the whole path is resolved only when one of them is a
        symlink. A missing component answers ``None``: opening the path
        reports it.
        """
        folder = "/".join(parts[:-1])
        linked = self._folders.get(folder) if folder else False
        if linked is None:
            real = _outside(self.real_root, parts[:-1])
            if real is not None:
                return os.path.realpath(os.path.join(self.real_root, *parts))
            linked = self._folders[folder] = _holds_symlink(self.real_root, parts[:-1])
        try:
            is_link = stat.S_ISLNK(os.lstat(os.path.join(self.real_root, *parts)).st_mode)
        except OSError:
            return None
        if linked or is_link:
            return _outside_if_linked(self.real_root, parts)
        return None


def _outside(real_root: str, parts: tuple[str, ...]) -> str | None:
    """The real path of ``real_root/parts…`` when it leaves ``real_root``, else ``None``.

    Only the components below the root are looked at (one ``lstat`` each);
    the whole path is resolved only when one of them is a symlink.
    """
    current = real_root
    for part in parts:
        current = os.path.join(current, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(current).st_mode)
        except OSError:
            return None  # nothing below a missing component: opening the path reports it
        if is_link:
            return _outside_if_linked(real_root, parts)
    return None


def _holds_symlink(real_root: str, parts: tuple[str, ...]) -> bool:
    """Whether a component of ``real_root/parts…`` is a symlink (a missing one ends the walk)."""
    current = real_root
    for part in parts:
        current = os.path.join(current, part)
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return True
        except OSError:
            return False
    return False


def _outside_if_linked(real_root: str, parts: tuple[str, ...]) -> str | None:
    real = os.path.realpath(os.path.join(real_root, *parts))
    return real if os.path.commonpath([real_root, real]) != real_root else None


EXIF_ORIENTATION = 0x0112
SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF rotations by 90 degrees: width and height swap


def image_size(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, data: bytes | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image as ``read_rgb`` returns it (EXIF rotation applied), header only.

    With ``data`` the header of those encoded bytes (a RecordIO or TFRecord
    record) is read and ``path`` only names them in errors. Raises
    ``ImageReadError`` like ``open_rgb`` (a header over ``max_pixels`` is ``too-large``).
    """
    path = Path(path)
    with _read_errors(path):
        head = data[:HEADER_BYTES] if data is not None else _read_head(path)
        size = jpeg_size(head)
    if size is not None and min(size) > 0:  # a plain JPEG: its SOF says it all, no PIL object needed
        _check_pixels(path, *size, max_pixels)
        return size
    with _read_errors(path), _open(path, data) as image:
        width, height = image.size
        _check_pixels(path, width, height, max_pixels)
        # A PNG's getexif() decodes all pixels to look for an eXIf chunk after
        # them: only an eXIf chunk before the pixels is read here.
        header_exif = image.format in ("JPEG", "TIFF", "WEBP") or (image.format == "PNG" and "exif" in image.info)
        if header_exif and image.getexif().get(EXIF_ORIENTATION) in SWAPPED_ORIENTATIONS:
            width, height = height, width
    return width, height


def _read_head(path: Path) -> bytes:
    """The first ``HEADER_BYTES`` of the regular file ``path`` (one open, one fstat, one read)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ImageReadError(path, "corrupt", "not a regular file")
        return os.read(descriptor, HEADER_BYTES)
    finally:
        os.close(descriptor)


def _open(path: Path, data: bytes | None) -> Image.Image:
    """The lazily opened image of ``data`` if given, else of the regular file ``path``."""
    return Image.open(io.BytesIO(data)) if data is not None else Image.open(_regular_file(path))


def _regular_file(path: Path) -> Path:
    """``path`` if it is a regular file: a FIFO or a device would block or never end."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise ImageReadError(path, "corrupt", "not a regular file")
    return path


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            path, "too-large", f"{width}x{height} = {width * height:,} pixels, over --max-pixels {max_pixels:,}"
        )


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """Turn what reading ``path`` may raise into ``ImageReadError`` with a reason."""
    try:
        yield
    except FileNotFoundError as exc:
        detail = f"broken symlink to {os.readlink(path)}" if path.is_symlink() else "no such file"
        raise ImageReadError(path, "missing", detail) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(path, "symlink-loop", "a symlink that points back to itself") from exc
        raise ImageReadError(path, "corrupt", str(exc).split("\n")[0] or type(exc).__name__) from exc
    except (SyntaxError, ValueError) as exc:
        raise ImageReadError(path, "corrupt", str(exc).split("\n")[0] or type(exc).__name__) from exc


def open_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> Image.Image:
    """Decode an image file to an RGB PIL image (pixels loaded, file closed).

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped),
    16-bit greyscale scaled to 8 bits; EXIF orientation is applied. With
    ``max_side`` the image is shrunk (JPEG: decoded at a reduced scale) so
    that its longer side is at most ``max_side`` pixels. Raises
    ``ImageReadError`` with reason ``missing``, ``too-large`` (header over
    ``max_pixels``), ``symlink-loop`` or ``corrupt``. Pack crops PIL images
    directly, which saves two full-image copies per photo over ``read_rgb``.
    """
    return _load(Path(path), None, max_pixels, max_side)


def decode_rgb(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """``open_rgb`` for encoded image bytes (from a RecordIO or TFRecord); ``name`` for errors."""
    return _load(Path(name), data, max_pixels, None)


def _load(path: Path, data: bytes | None, max_pixels: int, max_side: int | None) -> Image.Image:
    with _read_errors(path):
        image = _open(path, data)
        width, height = image.size
        if width * height > max_pixels:
            image.close()
            _check_pixels(path, width, height, max_pixels)
        if max_side is not None and max(width, height) > max_side:
            scale = max_side / max(width, height)
            image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image.load()  # reads the pixels and closes the file of a single-frame image
        ImageOps.exif_transpose(image, in_place=True)
        if max_side is not None and max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        return _to_rgb(image)


def read_image_bytes(path: str | Path) -> bytes:
    """The encoded bytes of the image file ``path``, undecoded; ``ImageReadError`` like ``open_rgb``."""
    path = Path(path)
    with _read_errors(path):
        return _regular_file(path).read_bytes()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> np.ndarray:
    """``open_rgb`` as an RGB ``uint8`` array of shape ``(H, W, 3)``."""
    return np.asarray(open_rgb(path, max_pixels, max_side), dtype=np.uint8)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a baseline/progressive JPEG from its SOF marker, without decoding.

    The header segments are walked up to the start of scan (SOS). ``None``
    when ``data`` is not a JPEG, ends or is damaged before its SOS, has no
    SOF, or carries an EXIF block (its orientation could turn the pixels, so
    it must be decoded): the caller then asks PIL.
    """
    if data[:2] != b"\xff\xd8":
        return None
    size = None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xDA:
            return size
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return None
        if marker == 0xE1 and data[pos + 4 : pos + 8] == b"Exif":
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                return None
            size = int.from_bytes(data[pos + 7 : pos + 9], "big"), int.from_bytes(data[pos + 5 : pos + 7], "big")
        pos += 2 + length
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
