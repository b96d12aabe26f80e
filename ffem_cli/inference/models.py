"""Loading the model a command uses: a run, a ``.keras`` file or an export (SavedModel, TFLite, ONNX).

Every source becomes an ``inference.embedding.Embedder``, so faces are cut
the same way whichever runtime embeds them: a run's ``run.toml`` [data]
table, or the ``face_crop`` recorded in an export's ``<name>.json`` metadata.
``calibration_of`` finds the thresholds that belong to the model (the run's
``calibration.json``, or the copy ``ffem export`` put into the metadata).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ffem_cli.errors import FfemError
from ffem_cli.inference.embedding import Embedder, FacePrep, load_embedder


class ExportedModel:
    """An exported model's ``embed(uint8 faces)`` behind the two things ``Embedder`` uses of a Keras model."""

    def __init__(self, embed, image_size: int, embedding_size: int):
        self.embed = embed
        self.input_shape = (None, image_size, image_size, 3)
        self.output_shape = (None, embedding_size)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        """``(N, D)`` float32 embeddings of float32 ``(N, S, S, 3)`` pixels (whole numbers in [0, 255])."""
        return np.asarray(self.embed(np.clip(np.rint(batch), 0, 255).astype(np.uint8)), dtype=np.float32)


def is_export(path: Path | None) -> bool:
    return path is not None and (Path(path).is_dir() or Path(path).suffix in (".tflite", ".onnx"))


def export_metadata_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".json")


def load_export(path: Path, detect: bool = False, flip: bool = False) -> tuple[Embedder, dict]:
    """An exported model and its metadata; faces are prepared as the metadata's ``face_crop`` says."""
    from ffem_cli.export.runtimes import load_runtime

    path = Path(path)
    meta_path = export_metadata_path(path)
    if not path.exists():
        raise FfemError(f"{path}: no such exported model")
    if not meta_path.is_file():
        raise FfemError(f"{path}: no {meta_path.name} beside it (the metadata ffem export writes); cannot know how to cut faces")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        crop = meta["source"]["face_crop"]
        prep = FacePrep.from_run(crop, detect=detect, flip=flip)
        dim = int(meta["output"]["shape"][-1])
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise FfemError(f"{meta_path}: not ffem export metadata ({type(exc).__name__}: {exc})") from None
    try:
        runtime = load_runtime(path)
    except Exception as exc:  # each runtime raises its own types for a bad file
        raise FfemError(f"{path}: cannot load exported model ({type(exc).__name__}: {exc})") from None
    sha = str(meta.get("sha256") or "")
    return Embedder(ExportedModel(runtime, prep.image_size, dim), sha, prep, str(path)), meta


def load_model(run: Path | None, model: Path | None, image_size: int | None = None, detect: bool = False,
               flip: bool = False) -> tuple[Embedder, dict | None]:  # fmt: skip
    """``(embedder, calibration or None)`` for ``--run`` or ``--model`` (``.keras`` or an export)."""
    if run is None and is_export(model):
        embedder, meta = load_export(model, detect, flip)
        calibration = meta.get("calibration")
        return embedder, calibration if isinstance(calibration, dict) else None
    embedder = load_embedder(run, model, image_size=image_size, detect=detect, flip=flip)
    return embedder, calibration_of(embedder)


def calibration_of(embedder: Embedder) -> dict | None:
    """The ``calibration.json`` beside the model file when it was made for this very model, else ``None``."""
    from ffem_cli.inference.calibration import calibration_beside

    return calibration_beside(Path(embedder.description), embedder.model_sha256)
