"""Resuming a run on another device count: what must stay, and what ``run.toml`` records.

The global batch (``batch_size``) is the run's unit of data: the per-device
batch is recomputed from it (``batch_size / replicas``), so a checkpoint's
data position, ``step_in_epoch`` global batches = ``images_seen`` images
into the epoch, means the same images on N or M devices. Checkpoints hold
one value per variable (mirrored replicas agree), so they load on any
device count. Each resume appends a ``[[resumed]]`` table to ``run.toml``
with the devices it ran on, so a change of device count is on record.
"""

from __future__ import annotations

from ffem_cli.errors import FfemError


def check_global_batch(stored_train: dict, batch_size: int) -> None:
    """Refuse a resume that changes the global batch: the data position would mean other images."""
    stored = stored_train.get("batch_size")
    if stored is not None and int(stored) != batch_size:
        raise FfemError(
            f"the run was trained with a global batch of {stored}; resume it with the same "
            f"--batch-size (on another device count the per-device batch is recomputed from it)"
        )


def resumed_entry(started: str, devices: list[str], batch_size: int, previous_devices: list[str]) -> dict:
    """One ``[[resumed]]`` table: when, on which devices, the per-device batch, the change if any."""
    entry = {
        "started": started,
        "devices": devices,
        "replicas": len(devices),
        "per_replica_batch": batch_size // max(len(devices), 1),
    }
    if len(previous_devices) != len(devices):
        entry["replicas_before"] = len(previous_devices)
    return entry
