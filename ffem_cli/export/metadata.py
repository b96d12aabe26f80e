"""The metadata written beside every exported file (``<name>.json``).

It says how to feed the model (input size, dtype, channel order, value
range, where normalisation happens), what comes out, how faces were cut in
training, where the model came from, the tool versions, and the file's
SHA-256 so a copy can be checked.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from ffem_cli import __version__
from ffem_cli.export.converters import INPUT_NAME, ONNX_OPSET, OUTPUT_NAME
from ffem_cli.hashing import file_sha256

NORMALISATION = "(x - 127.5) / 128, inside the graph (feed raw pixels)"


def sha256_of(path: Path) -> str:
    """SHA-256 of a file; for a folder (SavedModel), of its sorted ``relative path, file digest`` lines."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    lines = [
        f"{item.relative_to(path).as_posix()} {file_sha256(item)}\n"
        for item in sorted(path.rglob("*"))
        if item.is_file()
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def versions(fmt: str) -> dict:
    """ffem, TensorFlow, Keras (and tf2onnx + opset for ONNX) versions."""
    import keras
    import tensorflow as tf

    found = {"ffem": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}
    if fmt == "onnx":
        import tf2onnx

        found.update(tf2onnx=tf2onnx.__version__, onnx_opset=ONNX_OPSET)
    return found


def describe(
    path: Path,
    fmt: str,
    quantization: str,
    image_size: int,
    embedding_size: int,
    source: dict,
    parity: dict,
    calibration: dict | None = None,
) -> dict:
    """The metadata dictionary of one exported file (``source``: run/model provenance).

    ``calibration``: the run's ``calibration.json`` (thresholds from ``ffem
    calibrate``), carried so that the exported file can be used with them.
    """
    return {
        "file": path.name,
        "format": fmt,
        "quantization": quantization,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": [None, image_size, image_size, 3],
            "channel_order": "RGB",
            "value_range": [0, 255],
            "normalisation": NORMALISATION,
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "uint8" if quantization == "int8-uint8" else "float32",
            "shape": [None, embedding_size],
            "l2_normalised": True,
            **(
                {"dequantize": "(q - zero_point) * scale, from the output tensor's quantization"}
                if quantization == "int8-uint8"
                else {}
            ),
        },
        "source": source,
        "parity": parity,
        "calibration": calibration,
        "versions": versions(fmt),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sha256": sha256_of(path),
    }
