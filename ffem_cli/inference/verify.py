"""``ffem verify A B``: one cosine score, a decision and the threshold it was made at."""

from __future__ import annotations

from pathlib import Path

from ffem_cli.errors import FfemError
from ffem_cli.inference.embedding import Embedder, FaceSource, compute_embeddings

NO_FACE_EXIT = 2


def pair_score(embedder: Embedder, first: Path, second: Path) -> float:
    """Cosine similarity of the faces of two images; ``FfemError`` (exit 2) when one has no face."""
    for path in (first, second):
        if not Path(path).is_file():
            raise FfemError(f"{path}: no such image")
    sources = [FaceSource(Path(first).resolve()), FaceSource(Path(second).resolve())]
    embedded = compute_embeddings(embedder, sources, cache_dir=None, batch_size=2, description="verify")
    for path, found in zip((first, second), embedded.valid, strict=True):
        if not found:
            raise FfemError(f"{path}: no face found", exit_code=NO_FACE_EXIT)
    return float(embedded.vectors[0] @ embedded.vectors[1])
