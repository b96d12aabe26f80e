"""Refuse an output that cannot be written before any work starts, in one line."""

from __future__ import annotations

import os
from pathlib import Path

from ffem_cli.errors import FfemError


def check_writable(path: str | os.PathLike, folder: bool = False) -> None:
    """``FfemError`` unless ``path`` (a file, or with ``folder`` a folder) can be created or written.

    The nearest existing ancestor must be a folder this process may write
    into (``os.access`` with the effective ids: read-only folders and
    read-only file systems are refused); an existing ``path`` must be of the
    right kind (a folder for ``folder``, else a writable file).
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise FfemError(f"{path}: exists and is not a folder")
        if not folder and path.is_dir():
            raise FfemError(f"{path}: is a folder, not a file")
        if not os.access(path, os.W_OK | (os.X_OK if folder else 0), effective_ids=True):
            raise FfemError(f"{path}: not writable (permission denied)")
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FfemError(f"{path}: cannot be created, {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK, effective_ids=True):
        raise FfemError(f"{path}: cannot be created, {parent} is not writable (permission denied)")


def check_new_file(path: str | os.PathLike, overwrite: bool) -> None:
    """``check_writable`` for a single output file, which must also not exist yet unless ``overwrite``.

    A plain file carries no mark of who wrote it, so ffem replaces one only
    when asked: ``--overwrite`` on every command that writes a file to a
    path the user names.
    """
    check_writable(path)
    if not overwrite and Path(path).exists():
        raise FfemError(f"{path}: already exists; pass --overwrite to replace it")
