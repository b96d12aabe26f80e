"""Where the optional real face data lives, for tests and benchmarks.

``$FFEM_DATA_ROOT`` when set, else ``../shared/data`` beside the project
checkout. The data (LFW, a detection set) is never part of the repository;
callers skip with ``missing_reason()`` when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The real-data folder (it may not exist)."""
    env = os.environ.get("FFEM_DATA_ROOT")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def lfw_root() -> Path:
    """LFW: ``images/<Name>/<Name>_NNNN.jpg`` plus the official pair and people files."""
    return data_root() / "lfw"


def detection_root() -> Path:
    """Images with known face counts: ``detection_manifest.csv`` lists them."""
    return data_root() / "detection"


def missing_reason(path: Path) -> str | None:
    """``None`` when ``path`` exists, else a sentence saying why a test skips."""
    if path.exists():
        return None
    return f"real data not found at {path} (set FFEM_DATA_ROOT to the folder holding lfw/ and detection/)"
