"""Write files so that a killed process never leaves a half-written output.

Everything is written to a temporary name in the destination folder, flushed
to disk, then renamed over the final name with ``os.replace`` (atomic on
POSIX). A reader therefore sees either the old file, the complete new file,
or no file, never a truncated one. A full disk surfaces as ``FfemError``
naming the file, and the temporary file is removed.

Folders are replaced only when ffem wrote everything in them (the one
ownership rule, ``check_owned``): a folder written by ``atomic_directory``
carries a ``.ffem-output`` marker listing its entries; a command whose
folder is recognisable by its own files (a pack) passes a name test
instead. Anything else, or the working folder, is refused with one line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ffem_cli.errors import FfemError

TMP_PREFIX = ".tmp-"
OUTPUT_MARKER = ".ffem-output"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_sibling(path: Path, suffix: str = "") -> Path:
    """A unique temporary path beside ``path`` (same filesystem, hidden name).

    ``mkstemp`` creates the file with mode 0600; it is widened to the mode a
    plain ``open()`` would give (0666 less the umask) so that the renamed
    output has ordinary permissions.
    """
    fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", buffering: int = -1
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing through a temporary sibling; rename on success.

    ``mode`` is ``"w"`` or ``"wb"``; ``buffering`` as ``open``'s (bytes of
    buffer; -1: Python's default, 8 KiB). On any exception the temporary
    file is deleted and the final name is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, mode, buffering=buffering, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _as_ffem_error(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _marker_names(folder: Path) -> set[str] | None:
    """The entry names ``folder``'s ``OUTPUT_MARKER`` lists, or ``None`` without a readable marker."""
    try:
        listed = json.loads((folder / OUTPUT_MARKER).read_text(encoding="utf-8")).get("files")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else None


def check_owned(path: str | os.PathLike, owns: Callable[[str], bool] | None = None) -> None:
    """Raise ``FfemError`` unless ffem may write over ``path``.

    Allowed: no such path, an empty folder, or a folder each of whose
    entries ffem wrote: named in its ``OUTPUT_MARKER``, or (when given)
    accepted by ``owns(name)``. A file, a symlink, the working folder or a
    folder above it, and a folder holding anything else are refused.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        above = next(parent for parent in path.absolute().parents if parent.exists())
        if not above.is_dir():
            raise FfemError(f"{path}: cannot be created, {above} is a file")
        return
    if path.is_symlink():
        raise FfemError(f"{path}: is a symlink; give the folder it points to, or a new folder")
    if not path.is_dir():
        raise FfemError(f"{path}: exists and is not a folder; ffem writes its output into a folder of its own")
    here = Path.cwd().resolve()
    if path.resolve() in (here, *here.parents):
        raise FfemError(f"{path}: is the working folder (or holds it); name a new folder for the output")
    entries = sorted(os.listdir(path))
    listed = _marker_names(path)
    if listed is None and owns is None and entries:
        raise FfemError(
            f"{path}: exists and was not written by ffem (no {OUTPUT_MARKER} marker); "
            "choose a new folder, or empty it yourself"
        )
    foreign = [
        name
        for name in entries
        if name != OUTPUT_MARKER and name not in (listed or ()) and not (owns is not None and owns(name))
    ]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise FfemError(
            f"{path}: holds {foreign[0]!r}{more} that ffem did not write there; "
            "choose a new folder, or move them away yourself"
        )


def replace_directory(staged: Path, path: Path) -> None:
    """Rename the complete folder ``staged`` to ``path``.

    An existing ``path`` is first renamed aside and removed only after the new
    folder is in place, so a kill leaves the old or the new folder (in the
    worst case the old one under ``.tmp-<name>.old.*``), never a mixture.
    """
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.old.", dir=path.parent))
        os.replace(path, old / path.name)
        os.replace(staged, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, owns: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """Build a directory under a temporary name; rename it to ``path`` on success.

    ``path`` must pass ``check_owned(path, owns)`` (checked before and after the work).
    The finished folder gets an ``OUTPUT_MARKER`` listing what was written,
    so a later run may replace it; an existing ``path`` is replaced only
    once the new one is complete.
    """
    path = Path(path).absolute()
    check_owned(path, owns)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        write_json(tmp / OUTPUT_MARKER, {"written_by": "ffem", "files": sorted(os.listdir(tmp))})
        check_owned(path, owns)
        replace_directory(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _as_ffem_error(exc, path) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON (UTF-8, trailing newline)."""
    with atomic_open(path, "w") as handle:
        json.dump(obj, handle, indent=indent, ensure_ascii=False)
        handle.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8)."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def _as_ffem_error(exc: OSError, path: Path) -> FfemError:
    if exc.errno == errno.ENOSPC:
        return FfemError(f"disk full while writing {path}; nothing was written under that name")
    return FfemError(f"cannot write {path}: {exc.strerror or exc}")
