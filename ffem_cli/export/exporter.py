"""``ffem export``'s core: load the embedder, convert, check parity, write atomically.

Flow: the Keras embedder embeds a set of parity faces (the reference); a
SavedModel is staged once in a hidden folder of the output directory (the
TFLite converter reads it); each requested export is built, its parity
measured, and only then moved under its final name with
``atomic.atomic_directory`` / ``atomic.atomic_open``. An unquantized export
whose minimum cosine is below ``UNQUANTIZED_MIN_COSINE`` raises ``FfemError``
and leaves nothing under its name. ``parity.json`` (merged with an earlier
one) and a ``<name>.json`` metadata file per export are written last.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffem_cli import atomic
from ffem_cli.errors import FfemError
from ffem_cli.export import converters, metadata, runtimes
from ffem_cli.export.converters import CALIBRATED, FORMATS, QUANTIZATIONS, export_name
from ffem_cli.export.faces import folder_faces, pack_faces, synthetic_faces
from ffem_cli.export.parity import UNQUANTIZED_MIN_COSINE, Parity, cosine_parity
from ffem_cli.export.quiet import captured_output
from ffem_cli.export.verification import KerasDecision, ValPairs, keras_decision, load_val_pairs
from ffem_cli.inference.calibration import calibration_beside
from ffem_cli.inference.embedding import FacePrep
from ffem_cli.inference.models import ModelSource
from ffem_cli.rundir import RunDir

PARITY_NAME = "parity.json"
# What tf.saved_model.save writes: a SavedModel folder from before the
# ``.ffem-output`` marker holding only these is replaced like one with it.
SAVEDMODEL_ENTRIES = frozenset({"saved_model.pb", "variables", "assets", "fingerprint.pb"})


@dataclass(frozen=True)
class ExportSource:
    """The embedder to export and what is known about it.

    ``prep``: how faces were cut in training (``run.toml`` ``[data]``);
    ``pack``: the pack the run trained on when it still exists;
    ``provenance``: run path, model file, backbone … for the metadata;
    ``default_output``: ``RUN/export/``, or ``export/`` beside a ``--model`` file.
    """

    model: object
    image_size: int
    embedding_size: int
    prep: FacePrep
    pack: Path | None
    provenance: dict
    default_output: Path
    calibration: dict | None = None


@dataclass(frozen=True)
class ExportFaces:
    """uint8 ``(N, S, S, 3)`` faces: ``parity`` (with a description), optional ``calibration`` and ``val_pairs``."""

    parity: np.ndarray
    parity_source: str
    calibration: np.ndarray | None = None
    calibration_source: str | None = None
    val_pairs: ValPairs | None = None


@dataclass(frozen=True)
class ExportedFile:
    """One export: its final path, format, quantization, parity and (with ``--val-pairs``) accuracy."""

    path: Path
    format: str
    quantization: str
    parity: Parity
    val_accuracy: float | None = None
    keras_val_accuracy: float | None = None

    @property
    def threshold(self) -> float | None:
        """The minimum cosine it had to reach (``None``: quantized, reported only)."""
        return UNQUANTIZED_MIN_COSINE if self.quantization == "none" else None


def export_source(loaded: ModelSource) -> ExportSource:
    """What ``ffem export`` knows of an embedder loaded by ``inference.models.load_model_source``."""
    data, model_table = loaded.config.get("data", {}), loaded.config.get("model", {})
    pack = Path(data["pack"]) if data.get("pack") and Path(data["pack"]).is_dir() else None
    prep = loaded.prep
    provenance = {
        "run": str(loaded.run.resolve()) if loaded.run is not None else None,
        "model_file": str(loaded.model_file.resolve()),
        "model_sha256": loaded.model_sha256,
        "backbone": model_table.get("backbone"),
        "pooling": model_table.get("pooling"),
        "embedding_size": loaded.embedding_size,
        "face_crop": {"image_size": prep.image_size, "crop": prep.crop, "margin": prep.margin},
    }
    default_output = RunDir(loaded.run).export_dir if loaded.run is not None else loaded.model_file.parent / "export"
    calibration = calibration_beside(loaded.model_file, loaded.model_sha256)
    return ExportSource(loaded.model, prep.image_size, loaded.embedding_size, prep, pack, provenance,
                        default_output, calibration)  # fmt: skip


def gather_faces(
    source: ExportSource,
    calibration: Path | None = None,
    calibration_count: int = 200,
    parity_images: Path | None = None,
    parity_count: int = 64,
    val_pairs: Path | None = None,
    val_root: Path | None = None,
) -> ExportFaces:
    """Calibration faces from ``calibration`` (a pack) and parity faces.

    Parity faces come from ``parity_images`` when given, else from the
    calibration pack (the faces after the calibration ones, when it has
    enough), else from the pack the run trained on, else synthetic faces.
    ``val_pairs``: a ``label,path1,path2`` list whose images (under
    ``val_root``) are prepared for the verification-accuracy figure.
    """
    calibration_faces = None
    if calibration is not None:
        _check_pack_dir(calibration, "--calibration")
        read = pack_faces(calibration, source.image_size, calibration_count + parity_count)
        calibration_faces = read[:calibration_count]
    if parity_images is not None:
        parity, described = (
            folder_faces(parity_images, source.prep, parity_count),
            f"images in {parity_images}",
        )
    elif calibration_faces is not None:
        if len(read) > calibration_count:
            parity, described = (
                read[calibration_count:],
                f"pack {calibration}, faces after the calibration ones",
            )
        else:
            parity, described = (
                read[:parity_count],
                f"pack {calibration}, the calibration faces themselves",
            )
    elif source.pack is not None:
        parity, described = (
            pack_faces(source.pack, source.image_size, parity_count),
            f"pack {source.pack} (the run's training pack)",
        )
    else:
        parity, described = (
            synthetic_faces(source.prep, parity_count),
            "synthetic drawn faces (no pack or images given)",
        )
    calibration_source = None if calibration is None else f"pack {calibration}, {len(calibration_faces)} faces"
    pairs = None if val_pairs is None else load_val_pairs(val_pairs, val_root, source.prep)
    return ExportFaces(parity, f"{described}: {len(parity)} faces", calibration_faces, calibration_source, pairs)


def _check_pack_dir(path: Path, option: str) -> None:
    if not Path(path).is_dir():
        raise FfemError(f"{path}: {option} must be a pack directory (ffem pack output); no such folder")


def check_request(formats: list[str], quantizations: list[str], has_calibration: bool) -> list[tuple[str, str]]:
    """The ``(format, quantization)`` jobs of a request; ``FfemError`` on a bad combination."""
    if not formats:
        raise FfemError(f"no --format given; choose from: {', '.join(FORMATS)}")
    for fmt in formats:
        if fmt not in FORMATS:
            raise FfemError(f"unknown format {fmt!r}; choose from: {', '.join(FORMATS)}")
    for quantization in quantizations:
        if quantization not in QUANTIZATIONS:
            raise FfemError(f"unknown quantization {quantization!r}; choose from: {', '.join(QUANTIZATIONS)}")
    quantized = [q for q in quantizations if q != "none"]
    if quantized and "tflite" not in formats:
        raise FfemError(f"--quantize {quantized[0]} applies to --format tflite only")
    calibrated = [q for q in quantizations if q in CALIBRATED]
    if calibrated and not has_calibration:
        raise FfemError(
            f"--quantize {calibrated[0]} needs --calibration PACK_DIR (faces to calibrate activation ranges)"
        )
    jobs = []
    for fmt in dict.fromkeys(formats):
        for quantization in dict.fromkeys(quantizations or ["none"]) if fmt == "tflite" else ["none"]:
            jobs.append((fmt, quantization))
    return jobs


def export(
    source: ExportSource,
    jobs: list[tuple[str, str]],
    faces: ExportFaces,
    output: Path,
    announce: Callable[[str], None] = lambda message: None,
) -> list[ExportedFile]:
    """Build every ``(format, quantization)`` job into ``output``; return what was written.

    Raises ``FfemError`` at the first unquantized export that fails parity
    (earlier exports stay written and recorded in ``parity.json``).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    announce(f"embedding {len(faces.parity)} parity faces with the Keras model")
    reference = runtimes.embed_in_batches(keras_runtime(source.model), faces.parity)
    decision = None
    if faces.val_pairs is not None:
        announce(f"embedding the {len(faces.val_pairs.faces)} pair-list faces with the Keras model")
        decision = keras_decision(
            faces.val_pairs,
            runtimes.embed_in_batches(keras_runtime(source.model), faces.val_pairs.faces),
        )
    written: list[ExportedFile] = []
    try:
        with tempfile.TemporaryDirectory(prefix=f"{atomic.TMP_PREFIX}staging.", dir=output) as staging:
            saved_model = Path(staging) / "saved_model"
            announce("tracing the serving function (uint8 faces → embeddings) into a SavedModel")
            with captured_output():
                converters.write_savedmodel(source.model, saved_model, source.image_size)
            for fmt, quantization in jobs:
                announce(f"exporting {export_name(fmt, quantization)}")
                written.append(_export_one(source, fmt, quantization, saved_model, faces, reference, decision, output))
    finally:
        if written:
            _update_parity_file(output / PARITY_NAME, written, faces, decision)
    return written


def keras_runtime(model) -> runtimes.Embed:
    """The Keras embedder as an ``embed(uint8 faces)`` callable (the parity reference)."""
    return lambda faces: np.asarray(model(faces.astype(np.float32), training=False))


def _export_one(source, fmt, quantization, saved_model, faces, reference, decision, output) -> ExportedFile:
    final = output / export_name(fmt, quantization)
    val_accuracy = None
    if fmt == "savedmodel":
        with atomic.atomic_directory(final, SAVEDMODEL_ENTRIES.__contains__) as staged:
            shutil.copytree(saved_model, staged, dirs_exist_ok=True)
            with captured_output():
                embed = runtimes.savedmodel_runtime(staged)
                parity = _measure(embed, faces, reference, final.name, quantization)
                if decision is not None:
                    val_accuracy = _val_accuracy(embed, faces.val_pairs, decision)
    else:
        with captured_output():
            if fmt == "tflite":
                content = converters.tflite_bytes(saved_model, quantization, faces.calibration)
                embed = runtimes.tflite_runtime(content)
            else:
                content = converters.onnx_bytes(source.model, source.image_size)
                embed = runtimes.onnx_runtime(content)
            parity = _measure(embed, faces, reference, final.name, quantization)
            if decision is not None:
                val_accuracy = _val_accuracy(embed, faces.val_pairs, decision)
        atomic.write_bytes(final, content)
    parity_record = {**parity.to_json(), "faces_source": faces.parity_source}
    if decision is not None:
        parity_record.update(_val_record(val_accuracy, faces.val_pairs, decision))
    if quantization in CALIBRATED:
        parity_record["calibration"] = faces.calibration_source
    atomic.write_json(
        final.with_name(final.name + ".json"),
        metadata.describe(
            final,
            fmt,
            quantization,
            source.image_size,
            source.embedding_size,
            source.provenance,
            parity_record,
            source.calibration,
        ),
    )
    keras_accuracy = None if decision is None else decision.accuracy
    return ExportedFile(final, fmt, quantization, parity, val_accuracy, keras_accuracy)


def _val_accuracy(embed, pairs: ValPairs, decision: KerasDecision) -> float:
    return decision.accuracy_of(pairs, runtimes.embed_in_batches(embed, pairs.faces))


def _val_record(val_accuracy: float, pairs: ValPairs, decision: KerasDecision) -> dict:
    return {
        "val_accuracy": round(val_accuracy, 6),
        "keras_val_accuracy": round(decision.accuracy, 6),
        "val_threshold": decision.threshold,
        "val_pairs": pairs.source,
    }


def _measure(embed, faces: ExportFaces, reference: np.ndarray, name: str, quantization: str) -> Parity:
    parity = cosine_parity(reference, runtimes.embed_in_batches(embed, faces.parity))
    if quantization == "none" and not parity.passes(UNQUANTIZED_MIN_COSINE):
        raise FfemError(
            f"{name}: parity check failed: min cosine {parity.min_cosine:.6f} < {UNQUANTIZED_MIN_COSINE} "
            f"against the Keras model on {faces.parity_source}; nothing was written under that name"
        )
    return parity


def _update_parity_file(path: Path, written: list[ExportedFile], faces: ExportFaces, decision) -> None:
    """Merge this call's figures into ``parity.json`` (keyed by file name)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        record = {}
    exports = record.get("exports", {}) if isinstance(record, dict) else {}
    for item in written:
        exports[item.path.name] = {
            "format": item.format,
            "quantization": item.quantization,
            **item.parity.to_json(),
            "threshold": item.threshold,
            "faces_source": faces.parity_source,
        }
        if decision is not None:
            exports[item.path.name].update(_val_record(item.val_accuracy, faces.val_pairs, decision))
    atomic.write_json(
        path,
        {"metric": "cosine(exported, keras) per face", "exports": dict(sorted(exports.items()))},
    )
