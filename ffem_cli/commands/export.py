"""`ffem export`: SavedModel, TFLite and ONNX exports with a parity check."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ffem_cli.console import err, out

ALL_FORMATS = ["savedmodel", "tflite", "onnx"]


def export(
    run: Path | None = typer.Option(
        None, "--run", help="Run directory whose embedder.keras and run.toml are exported."
    ),
    model: Path | None = typer.Option(None, "--model", help="A .keras embedder file to export instead of --run."),
    image_size: int | None = typer.Option(
        None,
        "--image-size",
        min=1,
        help="Face side in pixels, for --model files whose input size is not fixed.",
    ),
    formats: list[str] = typer.Option(
        ALL_FORMATS, "--format", "-f", help="savedmodel | tflite | onnx; repeat for several."
    ),
    quantize: list[str] = typer.Option(
        ["none"],
        "--quantize",
        "-q",
        help="TFLite only: none | float16 | int8 (dynamic range) | int8-full | int8-fallback (seed level 1: integer where possible, float fallback) | int8-uint8 (seed level 2: uint8 in and out); the last three need --calibration; repeat for several.",
    ),
    calibration: Path | None = typer.Option(
        None,
        "--calibration",
        help="Pack directory whose faces calibrate int8-full/-fallback/-uint8 (and serve as parity faces).",
    ),
    calibration_faces: int = typer.Option(
        200, "--calibration-faces", min=1, help="How many pack faces calibrate the integer quantizations."
    ),
    parity_images: Path | None = typer.Option(
        None,
        "--parity-images",
        help="Folder of face images for the parity check (with image_list.json: boxes are cut as in training).",
    ),
    parity_faces: int = typer.Option(64, "--parity-faces", min=1, help="How many faces the parity check compares."),
    val_pairs: Path | None = typer.Option(
        None,
        "--val-pairs",
        help="Pair list 'label,path1,path2' (ffem eval pairs format): report each export's verification accuracy at the Keras model's best threshold.",
    ),
    val_root: Path | None = typer.Option(
        None,
        "--val-root",
        help="Folder the --val-pairs image paths are relative to (default: the list's folder).",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output folder (default RUN/export/, or export/ beside the --model file).",
    ),
) -> None:
    """Export an embedder; every export must match the Keras model's embeddings (cosine ≥ 0.9999 unquantized)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ffem_cli import export as core
    from ffem_cli.inference.models import load_model_source
    from ffem_cli.writable import check_writable

    jobs = core.check_request(formats, quantize, has_calibration=calibration is not None)
    source = core.export_source(load_model_source(run, model, image_size))
    output = output if output is not None else source.default_output
    check_writable(output, folder=True)
    faces = core.gather_faces(source, calibration, calibration_faces, parity_images, parity_faces, val_pairs, val_root)
    err.print(f"parity faces: {faces.parity_source}", markup=False, highlight=False)
    written = core.export(
        source,
        jobs,
        faces,
        output,
        announce=lambda text: err.print(f"{text}…", style="dim", markup=False, highlight=False),
    )
    _show(written, output / core.PARITY_NAME, faces.val_pairs is not None)


def _show(written, parity_path: Path, with_accuracy: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{parity_path.parent}: cosine with the Keras model per face"))
    columns = ["file", "format", "quant.", "faces", "min cos", "mean cos", "check"] + (
        ["val acc"] if with_accuracy else []
    )
    for column in columns:
        table.add_column(
            column,
            justify="right" if "cos" in column or column == "faces" else "left",
            no_wrap=column == "file",
        )
    for item in written:
        check = "[green]pass[/]" if item.threshold is not None else f"drop {1 - item.parity.mean_cosine:.1e}"
        table.add_row(
            item.path.name,
            item.format,
            item.quantization,
            str(item.parity.faces),
            f"{item.parity.min_cosine:.6f}",
            f"{item.parity.mean_cosine:.6f}",
            check,
            *([f"{item.val_accuracy:.4f}"] if with_accuracy else []),
        )
    out.print(table)
    if with_accuracy:
        out.print(
            f"val acc: pair-list accuracy at the Keras model's best threshold (Keras: {written[0].keras_val_accuracy:.4f})",
            markup=False,
            highlight=False,
        )
    out.print(
        f"unquantized exports must reach min cos ≥ 0.9999; figures in {parity_path}",
        markup=False,
        highlight=False,
    )
