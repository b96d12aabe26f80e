"""Fault injection for the kill-and-resume tests: ``FFEM_KILL_AT=<point>`` SIGKILLs the process there.

A point is a fixed string named where it is placed (e.g.
``train:before-embedder-save:2``, just before the end of epoch 2 writes
``embedder.keras``). Unset, a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "FFEM_KILL_AT"


def kill_point(name: str) -> None:
    """Die at once (SIGKILL, as ``kill -9`` would) when ``$FFEM_KILL_AT`` is ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
