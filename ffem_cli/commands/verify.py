"""`ffem verify A B`: are these two faces the same person?"""

from __future__ import annotations

from pathlib import Path

import typer

from ffem_cli.console import out


def verify(
    first: Path = typer.Argument(..., help="First photo (a face crop, or a whole photo with --detect)."),
    second: Path = typer.Argument(..., help="Second photo."),
    run: Path | None = typer.Option(
        None, "--run", help="Run directory (embedder.keras + run.toml + calibration.json)."
    ),
    model: Path | None = typer.Option(
        None, "--model", help="A .keras file, or an export: saved_model/, model.tflite, model.onnx."
    ),
    far: float | None = typer.Option(
        None, "--far", min=0.0, max=1.0, help="Decide at the calibrated threshold of this false-accept rate, e.g. 1e-4."
    ),
    threshold: float | None = typer.Option(None, "--threshold", help="Decide at this cosine similarity instead."),
    detect: bool = typer.Option(False, "--detect", help="Find the faces with MTCNN (whole photos)."),
    flip: bool = typer.Option(False, "--flip", help="Add the mirrored face's embedding, then re-normalise."),
) -> None:
    """Score two faces and decide same / different at a calibrated (--far) or given (--threshold) threshold.

    Without either, the calibration's EER threshold is used. A photo without a face exits with status 2.
    """
    from ffem_cli.inference.calibration import pick_threshold
    from ffem_cli.inference.models import load_embedder_with_calibration
    from ffem_cli.inference.verify import pair_score

    embedder, calibration = load_embedder_with_calibration(run, model, detect=detect, flip=flip)
    chosen, how = pick_threshold(calibration, far, threshold, str(run or model))
    score = pair_score(embedder, first, second)
    decision = "same" if score >= chosen else "different"
    out.print(f"score {score:.4f}  decision {decision}  threshold {chosen:.4f} ({how})", highlight=False, markup=False)
