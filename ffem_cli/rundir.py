"""The run directory: one folder per training run, shared by train, eval and export.

Layout (see docs/architecture.md)::

    runs/<run>/
      run.toml         resolved config + provenance
      checkpoints/     training state, N latest kept
      logs/            TensorBoard events
      metrics.jsonl    one JSON object per epoch / evaluation
      embedder.keras   the embedding model alone (no head)
      eval/<protocol>/ report.json, CSVs, PNGs
      export/          saved_model/, model.tflite, model.onnx, parity.json

``run.toml`` has a ``[data]`` table that says how faces were prepared
(``image_size``, ``crop`` = ``"margin"`` or ``"align"``, ``margin``), so that
eval, embed and export prepare faces exactly as training did.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ffem_cli import atomic
from ffem_cli.errors import FfemError


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory. Creating the object touches nothing on disk."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def config_path(self) -> Path:
        return self.path / "run.toml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def embedder_path(self) -> Path:
        return self.path / "embedder.keras"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    def eval_dir(self, protocol: str) -> Path:
        return self.path / "eval" / protocol

    def read_config(self) -> dict[str, Any]:
        """The parsed ``run.toml``; ``FfemError`` when missing or malformed."""
        if not self.config_path.is_file():
            raise FfemError(f"{self.path}: not a run directory (no run.toml)")
        try:
            return tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise FfemError(f"{self.config_path}: malformed TOML ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise FfemError(f"{self.config_path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None

    def write_config(self, config: dict[str, Any]) -> None:
        """Atomically write ``run.toml`` (``None`` values are dropped: TOML has no null)."""
        atomic.write_text(self.config_path, tomli_w.dumps(_drop_none(config)))

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON object as a line of ``metrics.jsonl`` (flushed and fsynced)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def load_embedder(self):
        """Load ``embedder.keras`` with plain ``keras.models.load_model``.

        Importing ``ffem_cli.models`` and ``ffem_cli.losses`` registers ffem's
        serialisable layers, so no ``custom_objects`` are needed.
        """
        if not self.embedder_path.is_file():
            raise FfemError(f"{self.path}: no embedder.keras (has training finished?)")
        return load_model_file(self.embedder_path)


def load_model_file(path: str | Path):
    """Load a ``.keras`` model file; ``FfemError`` when missing or unreadable."""
    import keras

    import ffem_cli.losses  # noqa: F401  (registers serialisable layers)
    import ffem_cli.models  # noqa: F401

    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such model file")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for a bad archive
        raise FfemError(f"{path}: cannot load model ({type(exc).__name__}: {exc})") from exc


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
