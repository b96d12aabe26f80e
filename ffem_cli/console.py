"""Console output shared by every command: one rich console on stderr and
the progress bar style used for long loops.

Results meant for pipes (tables a user may redirect) go to stdout through
``out``; progress, warnings and errors go to stderr through ``err``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

out = Console()
err = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, with the task's ``unit`` field (default ``it``)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "it")
        if task.speed is None:
            return Text(f"- {unit}/s", style="progress.data.speed")
        return Text(f"{task.speed:,.1f} {unit}/s", style="progress.data.speed")


def progress_bar(transient: bool = False) -> Progress:
    """A rich progress bar: description, bar, done/total, rate, elapsed, ETA.

    Usage::

        with progress_bar() as bar:
            task = bar.add_task("detect", total=n, unit="img")
            ...
            bar.advance(task, k)
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=transient,
    )


# Native (C++) log lines TensorFlow and XLA print straight to file descriptor 2
# at import and device discovery: absl's banner, INFO/WARNING lines, and the
# CUDA probe failing on machines without a GPU. TF_CPP_MIN_LOG_LEVEL no longer
# silences them (TF 2.21 logs through absl before absl is initialised).
_NATIVE_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    rb"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
)


def filter_native_logs() -> None:
    """Drop TensorFlow's native start-up chatter from stderr; keep everything else.

    File descriptor 2 is pointed at a pipe read by a daemon thread that
    forwards every line except the known noise to the real stderr. Python's
    ``sys.stderr`` (rich progress bars, tracebacks, ``error:`` lines) writes
    to the real stderr directly. Call once, before TensorFlow is imported.
    """
    real_fd = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stderr = os.fdopen(real_fd, "w", buffering=1, encoding="utf-8", errors="replace")
    err.file = sys.stderr

    def forward() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                if not _NATIVE_NOISE.match(line):
                    os.write(real_fd, line)

    threading.Thread(target=forward, name="ffem-native-log-filter", daemon=True).start()


@contextlib.contextmanager
def progress_updates(description: str, unit: str = "it") -> Iterator[Callable[[int, int | None], None]]:
    """A progress callback ``update(done, total)`` for core functions that report progress.

    The bar appears on the first call, so a command that fails while still
    validating its input prints its error line alone, without an empty bar.
    """
    bar: Progress | None = None
    task = None

    def update(done: int, total: int | None = None) -> None:
        nonlocal bar, task
        if bar is None:
            bar = progress_bar()
            bar.start()
            task = bar.add_task(description, total=total, unit=unit)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()
