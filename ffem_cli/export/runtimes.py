"""Running an exported model: one ``embed(faces) -> embeddings`` callable per format.

Used by the parity check, the export benchmark and anything that wants to
use an exported file. Every runtime takes uint8 ``(N, S, S, 3)`` RGB faces
and returns float32 ``(N, D)`` embeddings, as the exports promise.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

Embed = Callable[[np.ndarray], np.ndarray]


def savedmodel_runtime(directory: Path) -> Embed:
    """``serving_default`` of a SavedModel loaded with ``tf.saved_model.load``."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    return lambda faces: signature(faces=tf.constant(faces))["embeddings"].numpy()


def tflite_runtime(model: bytes | Path, threads: int | None = None) -> Embed:
    """The TFLite interpreter (XNNPACK on CPU), resized to each batch's size; a quantized
    output (``int8-uint8``) is dequantized with its scale and zero point."""
    import tensorflow as tf

    content = Path(model).read_bytes() if isinstance(model, Path) else model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_content=content, num_threads=threads)
    input_index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]
    output_index = output["index"]
    scale, zero_point = output["quantization"]  # (0.0, 0) for a float output
    allocated = [None]

    def embed(faces: np.ndarray) -> np.ndarray:
        if allocated[0] != faces.shape:
            interpreter.resize_tensor_input(input_index, faces.shape)
            interpreter.allocate_tensors()
            allocated[0] = faces.shape
        interpreter.set_tensor(input_index, faces)
        interpreter.invoke()
        values = interpreter.get_tensor(output_index)
        if scale:  # a quantized (uint8/int8) output: back to float32
            return (values.astype(np.float32) - zero_point) * np.float32(scale)
        return values.copy()

    return embed


def onnx_runtime(model: bytes | Path, threads: int | None = None) -> Embed:
    """An onnxruntime CPU session (``threads`` intra-op threads; ``None`` = its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    content = Path(model).read_bytes() if isinstance(model, Path) else model
    session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda faces: session.run(None, {input_name: faces})[0]


def load_runtime(path: Path, threads: int | None = None) -> Embed:
    """The runtime for an exported file: a SavedModel folder, ``.tflite`` or ``.onnx``."""
    path = Path(path)
    if path.is_dir():
        return savedmodel_runtime(path)
    if path.suffix == ".tflite":
        return tflite_runtime(path, threads)
    if path.suffix == ".onnx":
        return onnx_runtime(path, threads)
    raise ValueError(f"{path}: not a SavedModel folder, .tflite or .onnx file")


def embed_in_batches(embed: Embed, faces: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """``embed`` over ``faces`` in batches; float32 ``(N, D)``."""
    parts = [np.asarray(embed(faces[i : i + batch_size]), dtype=np.float32) for i in range(0, len(faces), batch_size)]
    return np.concatenate(parts)
