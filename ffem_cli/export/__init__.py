"""Exporting an embedder: SavedModel, TFLite (float32, float16, int8, full int8) and ONNX.

Every export takes uint8 ``(N, S, S, 3)`` RGB faces and returns float32
L2-normalised ``(N, D)`` embeddings; each one is checked against the Keras
model on real, packed or synthetic faces before it is written (see
``exporter``). Public API::

    source = export_source(load_model_source(run=Path("runs/x"), model_file=None))
    jobs = check_request(["tflite", "onnx"], ["none", "float16"], has_calibration=False)
    faces = gather_faces(source)
    written = export(source, jobs, faces, source.default_output)
"""

from ffem_cli.export.converters import FORMATS, QUANTIZATIONS, export_name
from ffem_cli.export.exporter import (
    PARITY_NAME,
    ExportedFile,
    ExportFaces,
    ExportSource,
    check_request,
    export,
    export_source,
    gather_faces,
    keras_runtime,
)
from ffem_cli.export.parity import UNQUANTIZED_MIN_COSINE, Parity
from ffem_cli.export.runtimes import embed_in_batches, load_runtime

__all__ = [
    "FORMATS",
    "PARITY_NAME",
    "QUANTIZATIONS",
    "UNQUANTIZED_MIN_COSINE",
    "ExportFaces",
    "ExportSource",
    "ExportedFile",
    "Parity",
    "check_request",
    "embed_in_batches",
    "export",
    "export_name",
    "export_source",
    "gather_faces",
    "keras_runtime",
    "load_runtime",
]
