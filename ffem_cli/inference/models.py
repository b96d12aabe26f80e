"""Loading the model a command uses: a run, a ``.keras`` file or an export (SavedModel, TFLite, ONNX).

``load_model_source`` is the one loader of a Keras embedder (``--run RUN`` or
``--model FILE.keras``): it checks the run directory, reads ``run.toml``,
loads the model in safe mode, settles the face side and builds the
``FacePrep`` the model was trained with. ``ffem export`` builds its
``ExportSource`` from its ``ModelSource``; ``load_embedder`` wraps it into an
``inference.embedding.Embedder`` for eval, embed, search, calibrate and
verify. Naming: ``load_*model*`` (``load_model_file``,
``RunDir.load_keras_model``) gives a Keras model, ``load_*embedder*`` an
``Embedder``.

Every source becomes an ``Embedder``, so faces are cut the same way whichever
runtime embeds them: a run's ``run.toml`` [data] table, or the ``face_crop``
recorded in an export's ``<name>.json`` metadata. ``calibration_of`` finds the
thresholds that belong to the model (the run's ``calibration.json``, or the
copy ``ffem export`` put into the metadata).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256
from ffem_cli.inference.embedding import Embedder, FacePrep
from ffem_cli.rundir import RunDir, load_model_file

DEFAULT_IMAGE_SIZE = 112


@dataclass(frozen=True)
class ModelSource:
    """A Keras embedder loaded by ``load_model_source`` and what is known about it.

    ``model_file``: the ``.keras`` file (``RUN/embedder.keras`` for a run);
    ``run``: the run directory or ``None``; ``config``: its parsed
    ``run.toml`` (``{}`` for a bare file); ``prep``: how its faces were cut in
    training at the settled face side (a bare file: margin crop, margin 0.2);
    ``model_sha256``: of ``model_file``.
    """

    model: object
    model_file: Path
    run: Path | None
    config: dict
    prep: FacePrep
    model_sha256: str

    @property
    def embedding_size(self) -> int:
        return int(self.model.output_shape[-1])


def load_model_source(
    run: Path | None, model_file: Path | None, image_size: int | None = None, default_image_size: int | None = None
) -> ModelSource:
    """The embedder of ``--run RUN`` or ``--model FILE.keras``; ``FfemError`` in one line on bad input.

    The face side: the model's input side, the run's ``data.image_size`` and
    ``image_size`` (``--image-size``) must agree; when none is known (a bare
    file whose input size is not fixed) it is ``default_image_size``, and
    without one an error asks for ``--image-size``.
    """
    if (run is None) == (model_file is None):
        raise FfemError("give exactly one of --run RUN_DIR or --model FILE.keras")
    if run is not None:
        run_dir = RunDir(run)
        if not run_dir.path.is_dir():
            raise FfemError(f"{run}: no such run directory")
        config, data = run_dir.read_config(), run_dir.face_data()
        model, path = run_dir.load_keras_model(), run_dir.embedder_path
    else:
        config, data = {}, {}
        path = Path(model_file)
        model = load_model_file(path)
    size = _face_side(model, path, data.get("image_size"), image_size, default_image_size)
    prep = FacePrep.from_run({**data, "image_size": size})
    return ModelSource(model, path, None if run is None else Path(run), config, prep, file_sha256(path))


def _face_side(model, path: Path, run_size: int | None, option_size: int | None, default: int | None) -> int:
    shape = tuple(model.input_shape)
    if shape[1] != shape[2]:
        raise FfemError(f"{path}: expected an embedder taking (N, S, S, 3) faces, got input shape {shape}")
    candidates = {int(v) for v in (shape[1], run_size, option_size) if v is not None}
    if len(candidates) > 1:
        raise FfemError(
            f"{path}: conflicting input sizes {sorted(candidates)} (model input, run.toml data.image_size, --image-size)"
        )
    if candidates:
        return candidates.pop()
    if default is None:
        raise FfemError(f"{path}: the model's input size is not fixed; give --image-size")
    return default


def load_embedder(
    run: Path | None,
    model_file: Path | None,
    image_size: int | None = None,
    detect: bool = False,
    flip: bool = False,
    flip_mode: str = "sum",
    crop: str | None = None,
) -> Embedder:
    """The ``Embedder`` of ``--run RUN`` or ``--model FILE.keras`` (``load_model_source``).

    Faces are prepared as in training (a bare file: margin crop, margin 0.2,
    at the model's own input side, else ``image_size``, else 112) with the
    evaluation switches ``detect``, ``flip``, ``flip_mode``; ``crop``
    overrides the crop mode (e.g. ``"seed"`` for the seed's RFW crop).
    """
    source = load_model_source(run, model_file, image_size, default_image_size=DEFAULT_IMAGE_SIZE)
    prep = replace(source.prep, detect=detect, flip=flip, flip_mode=flip_mode)
    if crop is not None:
        prep = replace(prep, crop=crop)
    # the absolute path: a gallery records it, and ffem search may run from another folder
    return Embedder(model=source.model, model_sha256=source.model_sha256, prep=prep,
                    description=str(source.model_file.resolve()))  # fmt: skip


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
        raise FfemError(
            f"{path}: no {meta_path.name} beside it (the metadata ffem export writes); cannot know how to cut faces"
        )
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


def load_embedder_with_calibration(run: Path | None, model: Path | None, image_size: int | None = None, detect: bool = False,
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
