"""Writing an evaluation's results: one folder, written atomically, and a console table.

``write_results`` builds ``report.json``, the CSV tables and the PNG figures
in a temporary sibling folder and renames it over the final folder only when
everything is written, so a failed run never leaves a partial report. An
existing folder is replaced only when ffem wrote it (``check_output_dir``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from ffem_cli import __version__, atomic
from ffem_cli.console import out


def write_results(
    output_dir: Path,
    report: dict[str, Any],
    tables: Mapping[str, pd.DataFrame] | None = None,
    figures: Mapping[str, Callable[[Path], None]] | None = None,
    keep: Sequence[Path] = (),
) -> None:
    """Write ``report.json``, ``<name>.csv`` per table and ``<name>`` per figure writer into ``output_dir``.

    ``keep``: files written elsewhere first (e.g. ``--output scores.csv``)
    listed in the report. The folder replaces any previous one atomically.
    """
    report = {
        **report,
        "ffem_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": sorted([*(f"{n}.csv" for n in tables or {}), *(figures or {}), *(str(p) for p in keep)]),
    }
    with atomic.atomic_directory(output_dir, _listed_in_old_report(output_dir)) as tmp:
        for name, frame in (tables or {}).items():
            frame.to_csv(tmp / f"{name}.csv", index=False, float_format="%.6g")
        for name, draw in (figures or {}).items():
            draw(tmp / name)
        atomic.write_json(tmp / "report.json", _finite(report))


def check_output_dir(output_dir: Path) -> None:
    """``FfemError`` unless ``write_results`` may replace ``output_dir`` (``atomic.check_owned``).

    A report written before the ``.ffem-output`` marker existed counts as
    ffem's when the folder holds only its ``report.json`` and the files it lists.
    """
    atomic.check_owned(output_dir, _listed_in_old_report(output_dir))


def _listed_in_old_report(output_dir: Path) -> Callable[[str], bool] | None:
    try:
        report = json.loads((Path(output_dir) / "report.json").read_text(encoding="utf-8"))
        files = {str(name) for name in report["files"]} if "ffem_version" in report else None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return None if files is None else lambda name: name == "report.json" or name in files


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: such floats become ``None``."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _finite(value.item())
    return value


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None) -> None:
    """A rich table on stdout; floats shown with 4 decimals."""
    table = Table(title=title, caption=caption, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    out.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4f}"
    return str(value)


def mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"
