"""Training checkpoints: every model and optimizer variable plus the loop position, in one file.

A checkpoint is ``checkpoints/ckpt-<step:09d>.npz``: a NumPy zip holding
each variable of the training model (embedder, loss head, BatchNorm
statistics, dropout seed states) and of the optimizer (slots, step counter,
loss scale) under its index, plus a JSON ``__meta__`` entry (step, epoch,
step in epoch, variable paths, and mid-epoch the epoch's running metrics,
so a resumed epoch logs the loss and accuracy an uninterrupted one does). It is written to a temporary name, fsynced
and renamed, so a killed process leaves either the previous set or the new
complete file. The zip's central directory and CRCs make a truncated or
corrupted file fail to load; ``restore_latest`` then falls back to the one
before it and says so.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffem_cli import atomic
from ffem_cli.console import err

NAME = re.compile(r"^ckpt-(\d{9})\.npz$")


@dataclass(frozen=True)
class Position:
    """Where training stands: batches done, current epoch, steps done in it.

    ``state``: what callbacks keep across a resume (e.g. validation's best
    value and patience counters), as read from a checkpoint. ``metrics``:
    mid-epoch, the epoch's running metrics so far (``StepMonitor.metric_state``).
    """

    step: int
    epoch: int
    step_in_epoch: int
    state: dict = field(default_factory=dict, compare=False)
    metrics: dict | None = field(default=None, compare=False)


def _variables(model, optimizer) -> list:
    return list(model.variables) + list(optimizer.variables)


def save(directory: Path, model, optimizer, position: Position, keep: int, state: dict | None = None) -> Path:
    """Write one checkpoint atomically and delete all but the ``keep`` newest; ``state``: JSON-able extras."""
    directory.mkdir(parents=True, exist_ok=True)
    variables = _variables(model, optimizer)
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    meta = {
        "step": position.step,
        "epoch": position.epoch,
        "step_in_epoch": position.step_in_epoch,
        "paths": [v.path for v in variables],
        "state": state or {},
        "metrics": position.metrics,
    }
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = directory / f"ckpt-{position.step:09d}.npz"
    with atomic.atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if NAME.match(p.name))


def restore_latest(directory: Path, model, optimizer) -> Position | None:
    """Load the newest readable checkpoint into ``model`` and ``optimizer``.

    Unreadable ones (truncated, corrupted) are skipped with a warning naming
    them. Returns ``None`` when there is no checkpoint at all.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            arrays, meta = _read(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            err.print(f"warning: {path} is unreadable ({type(exc).__name__}); trying the previous checkpoint")
            continue
        _assign(path, arrays, meta, _variables(model, optimizer))
        return Position(meta["step"], meta["epoch"], meta["step_in_epoch"], meta.get("state", {}), meta.get("metrics"))
    return None


def _read(path: Path) -> tuple[list[np.ndarray], dict]:
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(archive["__meta__"].tobytes().decode("utf-8"))
        arrays = [archive[f"v{i:05d}"] for i in range(len(meta["paths"]))]
    return arrays, meta


def _assign(path: Path, arrays: list[np.ndarray], meta: dict, variables: list) -> None:
    from ffem_cli.errors import FfemError

    if len(variables) != len(arrays):
        raise FfemError(
            f"{path}: holds {len(arrays)} variables but the model has {len(variables)}; "
            "was it written with another backbone, loss or optimizer?"
        )
    for variable, array, saved_path in zip(variables, arrays, meta["paths"], strict=True):
        if tuple(variable.shape) != array.shape:
            raise FfemError(
                f"{path}: variable {saved_path} has shape {array.shape}, the model's "
                f"{variable.path} has {tuple(variable.shape)}"
            )
        variable.assign(array)
