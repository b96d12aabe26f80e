"""Provenance of a run: what produced it, written to ``run.toml`` ``[provenance]``.

ffem, Keras and TensorFlow versions, the Keras backend, the git commit of the
ffem checkout (when it is one; ``dirty`` when it has uncommitted changes), the
devices the run used, the host, the start time and the exact command line.
The data fingerprint (``manifest_sha256``) lives in the ``[data]`` table.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from ffem_cli import __version__
from ffem_cli.realdata import PROJECT_ROOT


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """``<sha>`` or ``<sha>-dirty`` of the checkout holding ffem; ``None`` outside git."""
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if status.strip() else sha


def collect(devices: list[str], argv: list[str] | None = None) -> dict:
    """The ``[provenance]`` table (``devices``: the replica device names)."""
    import keras

    record = {
        "ffem_version": __version__,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "devices": list(devices),
        "host": platform.node(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command_line": list(sys.argv if argv is None else argv),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        record["tensorflow_version"] = tf.__version__
    return record
