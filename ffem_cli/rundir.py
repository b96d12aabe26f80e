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
import math
import os
import re
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ffem_cli import atomic
from ffem_cli.errors import FfemError

_TORN = object()  # a metrics.jsonl line that is not JSON (cut by a kill)


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

    def face_data(self) -> dict[str, Any]:
        """The ``[data]`` face preparation, checked: ``image_size`` (int >= 1, default 112),
        ``crop`` (``"margin"`` | ``"align"``), ``margin`` (finite number >= 0); ``FfemError`` otherwise."""
        data = self.read_config().get("data", {})
        if not isinstance(data, dict):
            raise FfemError(f"{self.config_path}: [data] must be a table")
        size, crop, margin = data.get("image_size", 112), data.get("crop", "margin"), data.get("margin", 0.2)
        if type(size) is not int or size < 1:
            raise FfemError(f"{self.config_path}: data.image_size must be a positive integer, got {size!r}")
        if crop not in ("margin", "align"):
            raise FfemError(f'{self.config_path}: data.crop must be "margin" or "align", got {crop!r}')
        if type(margin) not in (int, float) or not math.isfinite(margin) or margin < 0:
            raise FfemError(f"{self.config_path}: data.margin must be a number >= 0, got {margin!r}")
        return {**data, "image_size": size, "crop": crop, "margin": float(margin)}

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

    def read_metrics(self) -> list[dict[str, Any]]:
        """The ``metrics.jsonl`` records in file order (none when the file is absent); a line cut
        by a kill, or one that is not a JSON object, is left out."""
        return [record for _, record in self._metric_lines() if isinstance(record, dict)]

    def forget_epochs_after(self, epoch: int) -> None:
        """Drop ``metrics.jsonl`` lines of epochs after ``epoch`` (to be trained again after a
        fall-back to an older checkpoint) and lines cut by a kill, so no epoch is logged twice."""
        lines = self._metric_lines()
        kept = [
            line
            for line, record in lines
            if record is not _TORN
            and not (isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] > epoch)
        ]
        if len(kept) != len(lines):
            atomic.write_text(self.metrics_path, "".join(f"{line}\n" for line in kept))

    def _metric_lines(self) -> list[tuple[str, Any]]:
        """Each ``metrics.jsonl`` line with its parsed value (``_TORN``: not JSON)."""
        if not self.metrics_path.is_file():
            return []
        parsed = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                parsed.append((line, json.loads(line)))
            except json.JSONDecodeError:
                parsed.append((line, _TORN))
        return parsed

    def load_keras_model(self):
        """The Keras model of ``embedder.keras`` (``load_model_file``: safe mode, embedder shapes checked).

        Importing ``ffem_cli.models`` and ``ffem_cli.losses`` registers ffem's
        serialisable layers, so no ``custom_objects`` are needed.
        """
        if not self.embedder_path.is_file():
            raise FfemError(f"{self.path}: no embedder.keras (has training finished?)")
        return load_model_file(self.embedder_path)


def load_model_file(path: str | Path):
    """Load an embedder from a ``.keras`` file (Keras safe mode: no code from the file runs).

    ``FfemError`` in one line when the file is missing, is not a zip archive
    (e.g. truncated), holds code (a ``Lambda`` layer), cannot be read, or is
    not an embedder: one input ``(N, S, S, 3)`` and one output ``(N, D)``.
    """
    import keras

    import ffem_cli.losses  # noqa: F401  (registers serialisable layers)
    import ffem_cli.models  # noqa: F401

    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such model file")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise FfemError(f"{path}: not a .keras archive (truncated, or not a Keras model file)")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for a bad archive
        text = " ".join(str(exc).split())
        if "safe_mode" in text:
            held = re.search(r"`(\w+)` layer", text)
            raise FfemError(
                f"{path}: refused: the model holds code ({held.group(1) if held else 'a Python function'}); "
                "ffem loads models in Keras safe mode and runs no code from a file"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FfemError(f"{path}: cannot load model ({type(exc).__name__}: {first[:300]})") from None
    check_embedder_shapes(model, path)
    return model


def check_embedder_shapes(model, path: str | Path) -> None:
    """One input ``(N, S, S, 3)`` and one output ``(N, D)`` (one vector per face); ``FfemError`` otherwise."""
    inputs, outputs = model.inputs or [], model.outputs or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise FfemError(
            f"{path}: an embedder has one input and one output, this model has {len(inputs)} and {len(outputs)}"
        )
    shape_in, shape_out = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(shape_in) != 4 or shape_in[-1] != 3:
        raise FfemError(f"{path}: an embedder takes (N, S, S, 3) faces, this model takes {shape_in}")
    if len(shape_out) != 2 or not shape_out[1]:
        raise FfemError(f"{path}: an embedder gives one vector (N, D) per face, this model gives {shape_out}")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
