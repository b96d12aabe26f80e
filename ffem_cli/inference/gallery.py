"""Embedding galleries: ``ffem embed`` writes one, ``ffem search`` and ``ffem map`` read it.

A gallery is a Parquet file with one row per image: ``path`` (absolute),
``identity`` and ``label`` when the folder is ``ROOT/<identity>/<image>``,
``face_found`` (False when ``--detect`` found no face: the row is kept and
its embedding is zeros; search and map skip it) and ``embedding`` (a list of
float32) and ``sha256`` (of the image file's bytes). The file's key-value
metadata ``ffem`` holds the model file, its SHA-256 and the face
preparation, so ``ffem search`` can embed a query the same way without being
told the model again, and ``ffem embed --append`` adds only images whose
content is new, with the same model and preparation. Every change rewrites
the file atomically.

``look_up`` is ``ffem search``: the model named on the command line or the
one the gallery records (``embedder_for``), the ``k`` nearest faces, and in
open set the answer at a calibrated or given threshold (``Lookup``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ffem_cli import atomic
from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256
from ffem_cli.images import is_image_file, scan_identity_folder
from ffem_cli.inference.calibration import pick_threshold
from ffem_cli.inference.embedding import Embedder, FaceSource, compute_embeddings, folder_sources
from ffem_cli.inference.models import calibration_of, load_embedder
from ffem_cli.inference.search import topk_search

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


def embed_folder(embedder: Embedder, root: Path, output: Path, batch_size: int = 64, faces: Path | None = None,
                 append: bool = False) -> dict:  # fmt: skip
    """Embed every image under ``root`` and write the gallery ``output`` atomically; return counts.

    ``faces``: an ``image_list.json`` giving each image's box and landmarks
    (see ``embedding.folder_sources``). ``append``: add to the gallery at
    ``output`` (created when missing) the images whose content SHA-256 it
    does not hold yet; a gallery of another model or face preparation is
    refused.
    """
    import pyarrow as pa

    root = Path(root)
    paths, identities = list_images(root)
    sources = folder_sources(root, paths, faces)
    hashes = [file_sha256(s.path) for s in sources]
    old = _read_table(output) if append and Path(output).is_file() else None
    metadata = {
        "model": embedder.description,
        "model_sha256": embedder.model_sha256,
        "preparation": asdict(embedder.prep),
        "root": str(root.resolve()),
    }
    seen: set[str] = set()
    if old is not None:
        table, recorded = old
        _check_same_model(output, recorded, metadata)
        if "sha256" not in table.column_names:
            raise FfemError(
                f"{output}: the gallery has no sha256 column (written by an older ffem); embed it again without --append"
            )
        if ("identity" in table.column_names) != (identities is not None):
            raise FfemError(
                f"{output}: cannot mix a gallery {'with' if identities is None else 'without'} identities and a folder {'without' if identities is None else 'with'} them"
            )
        seen = set(table.column("sha256").to_pylist())
        metadata["root"] = recorded.get("root", metadata["root"])
    new = []  # images whose content is in neither the gallery nor earlier in this folder
    for i, digest in enumerate(hashes):
        if digest not in seen:
            seen.add(digest)
            new.append(i)
    embedded = compute_embeddings(
        embedder, [sources[i] for i in new], cache_dir=None, batch_size=batch_size, description="embed"
    )
    broken = int((embedded.valid & ~np.isfinite(embedded.vectors).all(axis=1)).sum())
    if broken:
        raise FfemError(
            f"{embedder.description}: gave NaN or infinite embeddings for {broken} faces; {output} was not written"
        )
    dim = embedder.embedding_size
    columns = {"path": pa.array([str(sources[i].path) for i in new], pa.string())}
    if identities is not None:
        columns["identity"] = pa.array([identities[i] for i in new], pa.string())
    columns["face_found"] = pa.array(embedded.valid, pa.bool_())
    flat = pa.array(embedded.vectors.reshape(-1), pa.float32())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, dim).cast(pa.list_(pa.float32()))
    columns["sha256"] = pa.array([hashes[i] for i in new], pa.string())
    added = pa.table(columns)
    if old is not None:
        added = pa.concat_tables([old[0].select(added.column_names), added])
    write_gallery(output, added, {**metadata, "embedding_size": dim})
    return {"images": len(paths), "added": len(new), "already_there": len(paths) - len(new), "rows": added.num_rows,
            "identities": len(set(identities)) if identities else 0, "without_face": embedded.num_invalid,
            "embedding_size": dim}  # fmt: skip


def _check_same_model(path: Path, recorded: dict, wanted: dict) -> None:
    if recorded.get("model_sha256") != wanted["model_sha256"]:
        raise FfemError(f"{path}: the gallery was embedded with another model ({recorded.get('model')}, sha256 "
                        f"{str(recorded.get('model_sha256'))[:12]}…); use that model or a new gallery")  # fmt: skip
    if recorded.get("preparation") != wanted["preparation"]:
        raise FfemError(f"{path}: the gallery's faces were prepared differently ({recorded.get('preparation')}) "
                        f"from now ({wanted['preparation']}); use the same --detect/--flip or a new gallery")  # fmt: skip


def write_gallery(output: Path, table, metadata: dict) -> None:
    """Write ``table`` atomically with a ``label`` column (0..N-1 over the sorted identities) and ``metadata``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if "identity" in table.column_names:
        names = table.column("identity").to_pylist()
        label_of = {name: i for i, name in enumerate(sorted(set(names)))}
        if "label" in table.column_names:
            table = table.drop_columns(["label"])
        table = table.add_column(2, "label", pa.array([label_of[n] for n in names], pa.int32()))
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    with atomic.atomic_open(output, "wb") as handle:
        pq.write_table(table, handle)


def _read_table(path: Path):
    """``(pyarrow table, ffem metadata)`` of a gallery file, checked (``gallery_columns``);
    ``FfemError`` when missing or not one."""
    table, columns = _read_checked(path)
    return table.replace_schema_metadata(None), columns[-1]


def _read_checked(path: Path):
    """``(pyarrow table, gallery_columns(table))`` of a gallery file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such gallery file (write one with ffem embed)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise FfemError(f"{path}: not a Parquet gallery ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    return table, gallery_columns(table, path)


def identity_counts(path: Path) -> list[tuple[str, int, int]]:
    """``[(identity, images, images with a face)]`` of a gallery, sorted by identity ("" for a flat gallery)."""
    table, _ = _read_table(path)
    names = table.column("identity").to_pylist() if "identity" in table.column_names else [""] * table.num_rows
    found = table.column("face_found").to_pylist() if "face_found" in table.column_names else [True] * table.num_rows
    counts: dict[str, list[int]] = {}
    for name, ok in zip(names, found, strict=True):
        entry = counts.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += bool(ok)
    return [(name, c[0], c[1]) for name, c in sorted(counts.items())]


def remove_identity(path: Path, identity: str) -> int:
    """Delete every row of ``identity`` from the gallery (atomic rewrite); return how many."""
    import pyarrow.compute as pc

    table, metadata = _read_table(path)
    if "identity" not in table.column_names:
        raise FfemError(f"{path}: the gallery has no identities")
    keep = pc.not_equal(table.column("identity"), identity)
    removed = table.num_rows - int(pc.sum(keep).as_py() or 0)
    if removed == 0:
        raise FfemError(f"{path}: no identity {identity!r} in the gallery")
    write_gallery(path, table.filter(keep), metadata)
    return removed


@dataclass(frozen=True)
class Gallery:
    """A read gallery, restricted to rows with a face: ``paths``, ``identities`` (or None), ``vectors`` (N, D)."""

    paths: list[str]
    identities: list[str] | None
    vectors: np.ndarray
    metadata: dict
    skipped: int


def read_gallery(path: Path) -> Gallery:
    """Read a gallery written by ``ffem embed``; ``FfemError`` in one line when missing or not one
    (``gallery_columns`` says what is checked)."""
    table, (paths, identities, found, vectors, metadata) = _read_checked(path)
    if table.num_rows == 0 or not found.any():
        raise FfemError(f"{path}: the gallery has no faces")
    keep = np.flatnonzero(found)
    return Gallery(
        [paths[i] for i in keep],
        None if identities is None else [identities[i] for i in keep],
        vectors[keep],
        metadata,
        int((~found).sum()),
    )


def gallery_columns(table, path: Path):
    """``(paths, identities | None, face_found (N,) bool, embeddings (N, D) float32, metadata dict)``
    of a gallery table, checked: ``path`` (and ``identity``) strings, ``face_found`` booleans,
    ``embedding`` lists of one length D >= 1, finite where a face was found, and the ``ffem``
    metadata a JSON object. ``FfemError`` naming the file and the first bad row otherwise."""
    import pyarrow as pa

    def bad(what: str) -> FfemError:
        return FfemError(f"{path}: not a valid ffem gallery ({what}); write it again with ffem embed")

    if "path" not in table.column_names or "embedding" not in table.column_names:
        raise FfemError(f"{path}: not an ffem gallery (needs 'path' and 'embedding' columns)")
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    try:
        metadata = json.loads(raw) if raw else {}
    except (UnicodeDecodeError, ValueError):
        raise bad("its 'ffem' metadata is not JSON") from None
    if not isinstance(metadata, dict):
        raise bad(f"its 'ffem' metadata is a {type(metadata).__name__}, not an object")
    prep = metadata.get("preparation", {})
    if not (
        isinstance(metadata.get("model", ""), str)
        and isinstance(metadata.get("model_sha256", ""), str)
        and isinstance(prep, dict)
        and type(prep.get("image_size", 1)) is int
        and prep.get("image_size", 1) > 0
        and all(isinstance(prep.get(key, False), bool) for key in ("detect", "flip"))
    ):
        raise bad("its 'ffem' metadata has fields of the wrong type (model, model_sha256, preparation)")
    for name, kind in (
        ("path", pa.types.is_string),
        ("identity", pa.types.is_string),
        ("face_found", pa.types.is_boolean),
    ):
        if name in table.column_names and not kind(table.schema.field(name).type):
            raise bad(f"column '{name}' holds {table.schema.field(name).type}")
        if name in table.column_names and table.column(name).null_count:
            raise bad(f"column '{name}' has empty values")
    embedding_type = table.schema.field("embedding").type
    if not (
        pa.types.is_list(embedding_type)
        or pa.types.is_large_list(embedding_type)
        or pa.types.is_fixed_size_list(embedding_type)
    ) or not (pa.types.is_floating(embedding_type.value_type) or pa.types.is_integer(embedding_type.value_type)):
        raise bad(f"column 'embedding' holds {embedding_type}, not lists of numbers")
    found = (
        np.asarray(table.column("face_found").to_pylist(), bool)
        if "face_found" in table.column_names
        else np.ones(table.num_rows, bool)
    )
    rows = table.column("embedding").to_pylist()
    sizes = {len(row) if row is not None else 0 for row in rows}
    if len(sizes) > 1 or 0 in sizes:
        raise bad(f"empty or different-length embeddings (lengths {sorted(sizes)[:4]})")
    vectors = np.asarray(rows, dtype=np.float32).reshape(len(rows), sizes.pop() if rows else 0)
    broken = np.flatnonzero(found & ~np.isfinite(vectors).all(axis=1))
    if len(broken):
        raise bad(f"{len(broken)} rows with NaN or infinite embeddings, the first is row {broken[0]}")
    paths = table.column("path").to_pylist()
    identities = table.column("identity").to_pylist() if "identity" in table.column_names else None
    return paths, identities, found, vectors, metadata


def search(embedder: Embedder, query: Path, gallery: Gallery, k: int) -> list[dict]:
    """The ``k`` gallery faces most similar to the face in ``query``: ``[{rank, path, identity, score}]``."""
    if embedder.embedding_size != gallery.vectors.shape[1]:
        raise FfemError(
            f"the model gives {embedder.embedding_size}-d embeddings but the gallery holds {gallery.vectors.shape[1]}-d ones"
        )
    sha = gallery.metadata.get("model_sha256")
    if sha and sha != embedder.model_sha256:
        raise FfemError(
            f"the gallery was embedded with another model ({gallery.metadata.get('model')}); use the same --run/--model"
        )
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


def embedder_for(gallery: Gallery, run: Path | None, model: Path | None, detect: bool) -> Embedder:
    """The model of ``--run``/``--model``, else the one ``gallery`` records, preparing faces with the
    gallery's ``flip``/``flip_mode`` (the recorded model: also its face side and ``detect``)."""
    prep = gallery.metadata.get("preparation", {})
    if run is None and model is None:
        recorded = gallery.metadata.get("model")
        if not recorded:
            raise FfemError("the gallery does not name its model; give --run or --model")
        if not Path(recorded).is_file():
            raise FfemError(f"the gallery's model {recorded} is not there any more; give --run or --model")
        return load_embedder(None, Path(recorded), image_size=prep.get("image_size"), detect=detect or prep.get("detect", False),
                             flip=prep.get("flip", False), flip_mode=prep.get("flip_mode", "sum"))  # fmt: skip
    return load_embedder(
        run, model, detect=detect, flip=prep.get("flip", False), flip_mode=prep.get("flip_mode", "sum")
    )


@dataclass(frozen=True)
class Lookup:
    """``ffem search``'s result: ``matches`` (``search``'s rows, best first) and, in open set, the
    cosine ``threshold`` an answer must reach and ``how`` it was chosen."""

    matches: list[dict]
    threshold: float | None = None
    how: str = ""

    @property
    def open_set(self) -> bool:
        return self.threshold is not None

    def accepts(self, match: dict) -> bool:
        """Whether ``match`` reaches the open-set threshold."""
        return self.open_set and match["score"] >= self.threshold

    @property
    def answer(self) -> str:
        """The best match's identity (its path in a flat gallery) when accepted, else ``"unknown"``."""
        best = self.matches[0] if self.matches else None
        return (best["identity"] or best["path"]) if best and self.accepts(best) else "unknown"


def look_up(query: Path, gallery_path: Path, k: int, run: Path | None = None, model: Path | None = None,
            detect: bool = False, far: float | None = None, threshold: float | None = None) -> Lookup:  # fmt: skip
    """The ``k`` faces of the gallery at ``gallery_path`` nearest the face in ``query``; with ``far`` or
    ``threshold`` also the open-set threshold (``calibration.pick_threshold``: ``--threshold``, the
    calibrated one at ``--far``, else the EER one)."""
    if not Path(query).is_file():
        raise FfemError(f"{query}: no such image")
    faces = read_gallery(gallery_path)
    embedder = embedder_for(faces, run, model, detect)
    if far is None and threshold is None:
        return Lookup(search(embedder, query, faces, k))
    chosen, how = pick_threshold(calibration_of(embedder), far, threshold, embedder.description)
    return Lookup(search(embedder, query, faces, k), chosen, how)


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
