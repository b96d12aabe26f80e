"""`ffem export`: SavedModel, TFLite and ONNX exports with a parity check."""

from ffem_cli.errors import FfemError


def export() -> None:
    """Export a run's embedder (not built yet)."""
    raise FfemError("ffem export is not built yet", exit_code=2)
