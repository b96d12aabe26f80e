"""Helpers for fault tests (not a test module): a folder no one may write into."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only_folder(parent: Path):
    """``parent/locked``, mode 0555; when running as root (which writes through modes) also
    immutable (``chattr +i``). Skips the test with the reason when that cannot be arranged."""
    locked = parent / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        locked.chmod(0o755)
        pytest.skip("running as root, which writes through mode 0555, and chattr +i is refused here")
    try:
        yield locked
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        locked.chmod(0o755)
