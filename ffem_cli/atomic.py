"""Write files so that a killed process never leaves a half-written output.

Everything is written to a temporary name in the destination folder, flushed
to disk, then renamed over the final name with ``os.replace`` (atomic on
POSIX). A reader therefore sees either the old file, the complete new file,
or no file, never a truncated one. A full disk surfaces as ``FfemError``
naming the file, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ffem_cli.errors import FfemError

TMP_PREFIX = ".tmp-"


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
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open ``path`` for writing through a temporary sibling; rename on success.

    ``mode`` is ``"w"`` or ``"wb"``. On any exception the temporary file is
    deleted and the final name is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
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


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name; rename it to ``path`` on success.

    An existing ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
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
