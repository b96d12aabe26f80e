"""Embedding a labelled set of faces: an identity folder or a pack.

Both give ``LabelledEmbeddings``: per image a key (the folder-relative path,
or the pack record's image-list key), an integer label, its embedding and
whether a face was found. A folder goes through ``inference.embedding`` (the
run's face preparation, ``--detect`` / ``--faces``, the cache); a pack's faces
were cut when it was packed, so its crop settings must be the run's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffem_cli.console import progress_bar
from ffem_cli.data.packdir import PackDir
from ffem_cli.errors import FfemError
from ffem_cli.inference.embedding import Embedder, compute_embeddings, embed_faces, folder_sources


@dataclass(frozen=True)
class LabelledEmbeddings:
    """``keys[i]``, ``labels[i]`` (int64), ``vectors[i]`` (float32, unit or zeros) and ``valid[i]``."""

    keys: list[str]
    labels: np.ndarray
    vectors: np.ndarray
    valid: np.ndarray
    identities: dict[int, str]


def folder_embeddings(
    embedder: Embedder, root: Path, faces: Path | None, cache_dir: Path | None, batch_size: int
) -> LabelledEmbeddings:
    """Every image of ``root/<identity>/<image>``, prepared as the run's faces."""
    from ffem_cli.images import scan_identity_folder

    folder = scan_identity_folder(root)
    embedded = compute_embeddings(
        embedder, folder_sources(root, folder.paths, faces), cache_dir, batch_size, description="embed folder"
    )
    names = {label: name for name, label in folder.label_map.items()}
    return LabelledEmbeddings(
        folder.paths, np.asarray(folder.labels, np.int64), embedded.vectors, embedded.valid, names
    )


def pack_embeddings(embedder: Embedder, pack_dir: Path, batch_size: int) -> LabelledEmbeddings:
    """Every face of a pack (file order); ``FfemError`` when its crop differs from the run's."""
    pack = PackDir(pack_dir)
    manifest = pack.manifest()
    prep = embedder.prep
    packed = (int(manifest["image_size"]), str(manifest["crop"]), float(manifest.get("margin", prep.margin)))
    wanted = (prep.image_size, prep.crop, prep.margin)
    if packed[:2] != wanted[:2] or (prep.crop == "margin" and abs(packed[2] - wanted[2]) > 1e-9):
        raise FfemError(
            f"{pack_dir}: faces were packed as {packed[0]} px, crop {packed[1]}, margin {packed[2]} but the model's "
            f"faces are {wanted[0]} px, crop {wanted[1]}, margin {wanted[2]}"
        )

    def embed(images) -> np.ndarray:
        faces = np.clip(np.rint(np.asarray(images)), 0, 255).astype(np.uint8)
        return embed_faces(embedder.model, faces, prep.flip, prep.flip_mode)

    with progress_bar() as bar:
        task = bar.add_task("embed pack", total=int(manifest["num_examples"]), unit="face")
        keys, all_labels, vectors = pack_vectors(embed, pack, batch_size, lambda n: bar.advance(task, n))
    names = pack.label_names
    names = {int(label): names.get(int(label), str(label)) for label in np.unique(all_labels)}
    return LabelledEmbeddings(keys, all_labels, vectors, np.ones(len(keys), bool), names)


def pack_vectors(
    embed: Callable[[object], np.ndarray],
    pack_dir: PackDir | Path,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(image keys, labels (N,) int64, embeddings (N, D) float32)`` of every face of a pack, in file
    order, unaugmented: the one pack-embedding loop (``pack_embeddings``, training validation's
    ``embed_pack``). ``embed`` maps one batch of the pack pipeline's float32 ``(B, S, S, 3)`` pixels
    to ``(B, D)``; ``on_batch(B)`` runs after each batch. ``FfemError`` on an empty pack."""
    from ffem_cli.data.pipeline import eval_dataset

    keys, labels, vectors = [], [], []
    for images, batch_labels, paths in eval_dataset(pack_dir, batch_size):
        vectors.append(np.asarray(embed(images), dtype=np.float32))
        labels.append(np.asarray(batch_labels, np.int64))
        keys.extend(p.decode("utf-8") for p in np.asarray(paths).tolist())
        if on_batch is not None:
            on_batch(len(labels[-1]))
    if not keys:
        raise FfemError(f"{pack_dir}: the pack holds no faces")
    return keys, np.concatenate(labels), np.concatenate(vectors)
