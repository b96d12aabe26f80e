"""Console output shared by every command: one rich console on stderr and
the progress bar style used for long loops.

Results meant for pipes (tables a user may redirect) go to stdout through
``out``; progress, warnings and errors go to stderr through ``err``.
"""

from __future__ import annotations

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
