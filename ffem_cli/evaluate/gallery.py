"""Embedding galleries: ``ffem embed`` writes one, ``ffem search`` and ``ffem map`` read it.

A gallery is a Parquet file with one row per image: ``path`` (absolute),
``identity`` and ``label`` when the folder is ``ROOT/<identity>/<image>``,
``face_found`` (False when ``--detect`` found no face: the row is kept and
its embedding is zeros; search and map skip it) and ``embedding`` (a list of
float32). The file's key-value metadata ``ffem`` holds the model file, its
SHA-256 and the face preparation, so ``ffem search`` can embed a query the
same way without being told the model again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ffem_cli import atomic
from ffem_cli.errors import FfemError
from ffem_cli.evaluate.embedding import Embedder, FaceSource, compute_embeddings, folder_sources
from ffem_cli.evaluate.search import topk_search
from ffem_cli.images import is_image_file, scan_identity_folder

METADATA_KEY = b"ffem"


def list_images(root: Path) -> tuple[list[str], list[str] | None]:
    """``(relative paths, identities)``: an identity folder, or a flat folder of images (identities ``None``)."""
    root = Path(root)
    if not root.is_dir():
        raise FfemError(f"{root}: not a folder")
    flat = sorted(p.name for p in root.iterdir() if is_image_file(p))
    has_subfolders = any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())
    if flat and not has_subfolders:
        return flat, None
    folder = scan_identity_folder(root)
    return folder.paths, [p.split("/", 1)[0] for p in folder.paths]


def embed_folder(embedder: Embedder, root: Path, output: Path, batch_size: int = 64, faces: Path | None = None) -> dict:
    """Embed every image under ``root`` and write the gallery ``output`` atomically; return counts.

    ``faces``: an ``image_list.json`` giving each image's box and landmarks
    (see ``embedding.folder_sources``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    paths, identities = list_images(root)
    sources = folder_sources(root, paths, faces)
    embedded = compute_embeddings(embedder, sources, cache_dir=None, batch_size=batch_size, description="embed")
    columns = {"path": pa.array([str(s.path) for s in sources], pa.string())}
    if identities is not None:
        names = sorted(set(identities))
        label_of = {name: i for i, name in enumerate(names)}
        columns["identity"] = pa.array(identities, pa.string())
        columns["label"] = pa.array([label_of[i] for i in identities], pa.int32())
    columns["face_found"] = pa.array(embedded.valid, pa.bool_())
    dim = embedded.vectors.shape[1]
    flat = pa.array(embedded.vectors.reshape(-1), pa.float32())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, dim).cast(pa.list_(pa.float32()))
    metadata = {
        "model": embedder.description,
        "model_sha256": embedder.model_sha256,
        "preparation": asdict(embedder.prep),
        "root": str(root.resolve()),
        "embedding_size": dim,
    }
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    with atomic.atomic_open(output, "wb") as handle:
        pq.write_table(table, handle)
    return {"images": len(paths), "identities": len(set(identities)) if identities else 0,
            "without_face": embedded.num_invalid, "embedding_size": dim}  # fmt: skip


@dataclass(frozen=True)
class Gallery:
    """A read gallery, restricted to rows with a face: ``paths``, ``identities`` (or None), ``vectors`` (N, D)."""

    paths: list[str]
    identities: list[str] | None
    vectors: np.ndarray
    metadata: dict
    skipped: int


def read_gallery(path: Path) -> Gallery:
    """Read a gallery written by ``ffem embed``; ``FfemError`` when missing or not one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such gallery file (write one with ffem embed)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FfemError(f"{path}: not a Parquet gallery ({exc})") from exc
    if "path" not in table.column_names or "embedding" not in table.column_names:
        raise FfemError(f"{path}: not an ffem gallery (needs 'path' and 'embedding' columns)")
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    metadata = json.loads(raw) if raw else {}
    found = np.asarray(table.column("face_found")) if "face_found" in table.column_names else np.ones(table.num_rows, bool)
    embeddings = table.column("embedding").to_pylist()
    if table.num_rows == 0 or not found.any():
        raise FfemError(f"{path}: the gallery has no faces")
    vectors = np.asarray([e for e, ok in zip(embeddings, found, strict=True) if ok], dtype=np.float32)
    paths = [p for p, ok in zip(table.column("path").to_pylist(), found, strict=True) if ok]
    identities = None
    if "identity" in table.column_names:
        identities = [i for i, ok in zip(table.column("identity").to_pylist(), found, strict=True) if ok]
    return Gallery(paths, identities, vectors, metadata, int((~found).sum()))


def search(embedder: Embedder, query: Path, gallery: Gallery, k: int) -> list[dict]:
    """The ``k`` gallery faces most similar to the face in ``query``: ``[{rank, path, identity, score}]``."""
    if embedder.embedding_size != gallery.vectors.shape[1]:
        raise FfemError(
            f"the model gives {embedder.embedding_size}-d embeddings but the gallery holds {gallery.vectors.shape[1]}-d ones"
        )
    sha = gallery.metadata.get("model_sha256")
    if sha and sha != embedder.model_sha256:
        raise FfemError(f"the gallery was embedded with another model ({gallery.metadata.get('model')}); use the same --run/--model")
    embedded = compute_embeddings(embedder, [FaceSource(Path(query).resolve())], cache_dir=None, description="query")
    if not embedded.valid[0]:
        raise FfemError(f"{query}: no face found")
    scores, indices = topk_search(embedded.vectors, gallery.vectors, min(k, len(gallery.paths)))
    return [
        {"rank": r + 1, "path": gallery.paths[i], "identity": gallery.identities[i] if gallery.identities else "",
         "score": float(s)}
        for r, (s, i) in enumerate(zip(scores[0], indices[0], strict=True))
        if i >= 0
    ]  # fmt: skip


def project_2d(vectors: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D coordinates ``(N, 2)``: PCA (top two principal axes, via SVD) or t-SNE (cosine metric)."""
    if method == "pca":
        centred = vectors - vectors.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        coords = centred @ vt[:2].T
        return coords if coords.shape[1] == 2 else np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    if method == "tsne":
        from sklearn.manifold import TSNE

        if len(vectors) < 3:
            raise FfemError("t-SNE needs at least 3 faces")
        perplexity = float(min(30.0, (len(vectors) - 1) / 3))
        return TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(vectors)
    raise FfemError(f"unknown map method {method!r} (pca or tsne)")
