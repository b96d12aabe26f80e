"""Turning an embedder into SavedModel, TFLite and ONNX files.

Every exported model has the same interface: input ``faces``, uint8
``(N, S, S, 3)`` RGB face crops; output ``embeddings``, float32
``(N, D)`` with unit L2 norm. The uint8 → float32 cast is the first op of
the exported graph and the embedder itself normalises ``(x - 127.5) / 128``
(docs/architecture.md), so a caller feeds decoded pixels as they are.

* SavedModel: ``keras.export.ExportArchive`` with one ``serve`` endpoint
  (also the ``serving_default`` signature) taking the uint8 batch.
* TFLite: ``tf.lite.TFLiteConverter.from_saved_model`` on that SavedModel,
  with the converter's post-training quantization: ``float16`` weights,
  ``int8`` dynamic-range weights, or ``int8-full`` full-integer (weights and
  activations, calibrated on a representative set of faces; the input stays
  uint8 with scale 1, the output is dequantized to float32), and the FFEM
  seed's ``convert_tflite`` levels: ``int8-fallback`` (level 1: calibrated
  integer kernels where TFLite has them, float kernels elsewhere) and
  ``int8-uint8`` (level 2: full integer with a **uint8 output**, the
  embedding quantized with the scale and zero point in the output tensor's
  details; ``runtimes.tflite_runtime`` dequantizes it).
* ONNX: ``tf2onnx.convert.from_function`` on a ``tf.function`` with an
  explicit uint8 input signature, opset ``ONNX_OPSET``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "int8", "int8-full", "int8-fallback", "int8-uint8")
#: Quantizations that need calibration faces (a representative dataset).
CALIBRATED = ("int8-full", "int8-fallback", "int8-uint8")
ONNX_OPSET = 17
INPUT_NAME = "faces"
OUTPUT_NAME = "embeddings"


def export_name(fmt: str, quantization: str = "none") -> str:
    """The file (or folder) name of an export inside the export directory."""
    if fmt == "savedmodel":
        return "saved_model"
    suffix = "" if quantization == "none" else f"-{quantization}"
    return f"model{suffix}.{fmt}"


def input_spec(image_size: int):
    """``tf.TensorSpec`` of the exported input: uint8 ``(None, S, S, 3)`` named ``faces``."""
    import tensorflow as tf

    return tf.TensorSpec((None, image_size, image_size, 3), tf.uint8, name=INPUT_NAME)


def serving_function(model, image_size: int):
    """A ``tf.function``: uint8 faces ``(N, S, S, 3)`` → ``{"embeddings": float32 (N, D)}``."""
    import tensorflow as tf

    @tf.function(input_signature=[input_spec(image_size)])
    def serve(faces):
        return {OUTPUT_NAME: model(tf.cast(faces, tf.float32), training=False)}

    return serve


def write_savedmodel(model, directory: Path, image_size: int) -> None:
    """Write a SavedModel whose ``serving_default`` signature is ``serving_function``."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serving_function(model, image_size))
    archive.write_out(str(directory), verbose=False)


def tflite_bytes(saved_model_dir: Path, quantization: str, calibration_faces: np.ndarray | None = None) -> bytes:
    """Convert a SavedModel written by ``write_savedmodel`` to a TFLite flatbuffer.

    ``calibration_faces``: uint8 ``(M, S, S, 3)``, required for the
    ``CALIBRATED`` quantizations (the representative dataset, fed one face at a time).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization in CALIBRATED:
        if calibration_faces is None or len(calibration_faces) == 0:
            raise ValueError(f"{quantization} quantization needs calibration faces")

        def representative_dataset():
            for face in calibration_faces:
                yield [face[np.newaxis]]

        converter.representative_dataset = representative_dataset
        if quantization != "int8-fallback":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8 if quantization == "int8-uint8" else tf.float32
    elif quantization not in ("none", "int8"):
        raise ValueError(f"unknown quantization {quantization!r}")
    return converter.convert()


def onnx_bytes(model, image_size: int) -> bytes:
    """Convert the embedder to a serialized ONNX model (opset ``ONNX_OPSET``)."""
    import tf2onnx

    serve = serving_function(model, image_size)
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[input_spec(image_size)], opset=ONNX_OPSET)
    return proto.SerializeToString()
