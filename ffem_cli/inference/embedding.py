"""Preparing faces and embedding them once: batched, threaded decoding, cached.

A ``FaceSource`` names an image and, optionally, where its face is (a box
and/or five landmarks, e.g. from RFW's landmark file or LFW's fixed centre
box). ``FacePrep`` holds how the model's faces were prepared in training
(``image_size``, ``crop``, ``margin`` from the run's ``run.toml``) plus the
evaluation switches ``detect`` and ``flip``. How one face is cut out:

1. ``detect``: MTCNN runs on the photos in size-grouped batches
   (``inference.detection``, the path of ``ffem detect``) and the face
   ``ffem detect`` would keep gives the box and landmarks (an image without a
   face becomes *invalid*: it is kept, counted and reported by every
   protocol, never silently dropped);
2. otherwise ``FacePrep.cut`` uses the source's landmarks (``crop =
   "align"``) or box (``crop = "margin"``) with ``data.crop.crop_face``; an
   aligned run given a box but no landmarks gets the margin crop of that box
   (see ``FacePrep.cut``); ``crop = "seed"`` (evaluation only, ``--crop
   seed``) is the seed FFEM project's crop: the source's box, or
   ``crop.seed_box_from_landmarks``, stretched to the face size with no margin;
3. a source with neither is taken as an already-cropped face and resized.

``FacePrep`` is the one face-preparation type: eval, embed, search, verify,
calibrate and export (its parity, calibration and ``--val-pairs`` faces) all
cut faces with ``FacePrep.cut``, built by ``FacePrep.from_run``.

``flip``: test-time augmentation with the horizontally mirrored face.
``flip_mode = "sum"`` adds the two embeddings and re-normalises (insightface's
evaluation); ``"concat"`` concatenates them (MassFace, facenet), giving
``2 D``-dimensional vectors, re-normalised so that a cosine similarity is the
mean of the two halves' similarities.

Embeddings are cached in ``CACHE_DIR/<key>/embeddings.npz`` where ``key``
hashes the model file's SHA-256 and the preparation settings; entries are
matched by image path, file size, modification time and face location, so a
second protocol over the same images reuses them and a changed file is
re-embedded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ffem_cli import atomic
from ffem_cli.console import progress_bar
from ffem_cli.data.crop import crop_face, seed_box_from_landmarks
from ffem_cli.errors import FfemError
from ffem_cli.images import ImageReadError, is_utf8_name, path_under, read_rgb, shown_name

CACHE_FORMAT = 1
CROP_MODES = ("margin", "align", "seed")
FLIP_MODES = ("sum", "concat")


@dataclass(frozen=True)
class FacePrep:
    """How faces are cut out and embedded (see the module docstring)."""

    image_size: int = 112
    crop: str = "margin"
    margin: float = 0.2
    detect: bool = False
    flip: bool = False
    flip_mode: str = "sum"

    def __post_init__(self):
        if self.crop not in CROP_MODES:
            raise FfemError(f"unknown crop mode {self.crop!r} (expected one of {', '.join(CROP_MODES)})")
        if self.flip_mode not in FLIP_MODES:
            raise FfemError(f"unknown flip mode {self.flip_mode!r} (expected one of {', '.join(FLIP_MODES)})")

    @classmethod
    def from_run(cls, data: Mapping[str, Any], **switches) -> FacePrep:
        """How a model's faces were prepared in training, plus evaluation ``switches``.

        ``data``: a run's checked ``run.toml`` ``[data]`` table
        (``RunDir.face_data``), an export's recorded ``face_crop``, or
        ``{"image_size": S}`` for a bare model file: ``image_size`` (pixels),
        ``crop`` (default ``"margin"``) and ``margin`` (fraction of the box's
        longer side, default 0.2). ``switches``: ``detect``, ``flip``,
        ``flip_mode``, or ``crop`` to override the run's (``--crop seed``).
        """
        trained = {"image_size": int(data["image_size"]), "crop": str(data.get("crop", "margin")),
                   "margin": float(data.get("margin", 0.2))}  # fmt: skip
        return cls(**{**trained, **switches})

    def cut(self, image: np.ndarray, box=None, landmarks=None) -> np.ndarray:
        """The ``(S, S, 3)`` uint8 face of an RGB uint8 ``(H, W, 3)`` image.

        ``box``: ``(x1, y1, x2, y2)`` pixels; ``landmarks``: ``(5, 2)`` ``(x, y)``
        pixels; either may be ``None``. ``crop = "align"`` with landmarks: the
        5-point alignment. With a box and no landmarks an aligned run gets the
        margin crop of the box with the run's margin: the nearest preparation
        the photo allows (``ffem eval lfw``'s fixed box, an ``image_list.json``
        without landmarks); it is not an error, for eval and export alike.
        Landmarks without a box: the MTCNN-like ``box_from_landmarks`` (or, for
        ``"seed"``, ``seed_box_from_landmarks``). Neither: the whole image,
        resized. ``ValueError`` on an empty box or degenerate landmarks.
        """
        align = self.crop == "align" and landmarks is not None
        stretch = self.crop == "seed"
        if not align and box is None and landmarks is not None:
            box = seed_box_from_landmarks(landmarks) if stretch else box_from_landmarks(landmarks)
        return crop_face(image, box, landmarks, size=self.image_size, margin=self.margin, align=align, stretch=stretch)

    @property
    def vector_factor(self) -> int:
        """How many model outputs one face's vector holds (2 for concatenated flips)."""
        return 2 if self.flip and self.flip_mode == "concat" else 1


@dataclass(frozen=True)
class FaceSource:
    """One image to embed: absolute ``path``; optional ``box`` (x1, y1, x2, y2) and ``landmarks`` (5 x (x, y)).

    ``unlisted``: a face list was given and does not hold this image (e.g.
    ``ffem detect`` rejected it), so it counts as an image without a face.
    """

    path: Path
    box: tuple[float, float, float, float] | None = None
    landmarks: tuple[tuple[float, float], ...] | None = None
    unlisted: bool = False

    def signature(self) -> str:
        """A string naming the image and the face location (the cache key of one entry)."""
        return f"{self.path}|{self.box}|{self.landmarks}|{self.unlisted}"


def folder_sources(root: Path, rel_paths: Sequence[str], faces: Path | None = None) -> list[FaceSource]:
    """``FaceSource``s for ``root/rel_path``; with ``faces`` (an ``image_list.json``,
    e.g. from ``ffem detect``) each image's box and landmarks come from the list,
    and images the list does not hold are ``unlisted`` (no face)."""
    root = Path(root)
    for rel in rel_paths:
        if not is_utf8_name(rel):
            raise FfemError(f"{root}: the file name {shown_name(rel)!r} is not UTF-8; rename it")
        try:
            path_under(root, rel)
        except ImageReadError as exc:
            raise FfemError(f"{root / rel}: {exc.detail}; eval reads only under {root}") from None
    if faces is None:
        return [FaceSource((root / p).resolve()) for p in rel_paths]
    from ffem_cli.data.image_list import load_image_list

    entries = load_image_list(faces)
    sources = []
    for rel in rel_paths:
        entry = entries.get(rel)
        if entry is None:
            sources.append(FaceSource((root / rel).resolve(), unlisted=True))
            continue
        landmarks = None if entry.landmarks is None else tuple(tuple(map(float, point)) for point in entry.landmarks)
        sources.append(FaceSource((root / rel).resolve(), tuple(map(float, entry.box)), landmarks))
    return sources


@dataclass
class Embedder:
    """A loaded embedding model, its identity (file SHA-256) and how to prepare faces for it."""

    model: object
    model_sha256: str
    prep: FacePrep
    description: str
    embedding_size: int = field(init=False)

    def __post_init__(self):
        self.embedding_size = int(self.model.output_shape[-1]) * self.prep.vector_factor

    def cache_key(self) -> str:
        spec = {"format": CACHE_FORMAT, "model_sha256": self.model_sha256, "prep": asdict(self.prep)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def prepare_face(source: FaceSource, prep: FacePrep, detection=None, image: np.ndarray | None = None) -> np.ndarray:
    """The ``(S, S, 3)`` uint8 face of ``source`` (``detection``: ``(box, landmarks)`` from MTCNN;
    ``image``: the source already decoded)."""
    image = read_source(source) if image is None else image
    if detection is not None:
        box, landmarks = detection
    else:
        box = source.box
        landmarks = None if source.landmarks is None else np.asarray(source.landmarks, dtype=np.float64)
    try:
        return prep.cut(image, box, landmarks)
    except ValueError as exc:
        raise FfemError(f"{source.path}: cannot cut out the face ({exc})") from exc


def read_source(source: FaceSource) -> np.ndarray:
    try:
        return read_rgb(source.path)
    except ImageReadError as exc:
        raise FfemError(f"{source.path}: cannot read image ({exc.reason}: {exc.detail})") from exc


# A face box in the 112x112 ArcFace template frame (x1, y1, x2, y2): the median
# of MTCNN's boxes mapped through each face's own 5-point alignment, measured
# with the mtcnn package on 300 LFW images (one random image per person).
TEMPLATE_FACE_BOX = (17.5, 11.9, 93.4, 117.4)


def box_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """An MTCNN-like face box for five landmarks: ``TEMPLATE_FACE_BOX`` mapped back to the photo.

    The box keeps the template box's size and centre under the similarity
    transform from the landmarks to the template (rotation ignored: boxes are
    axis-aligned).
    """
    from ffem_cli.data.crop import alignment_matrix

    matrix = alignment_matrix(landmarks, 112)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    x1, y1, x2, y2 = TEMPLATE_FACE_BOX
    centre_t = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    centre = np.linalg.solve(matrix[:, :2], centre_t - matrix[:, 2])
    half_w, half_h = (x2 - x1) / 2 / scale, (y2 - y1) / 2 / scale
    return (centre[0] - half_w, centre[1] - half_h, centre[0] + half_w, centre[1] + half_h)


def embed_faces(model, faces: np.ndarray, flip: bool, flip_mode: str = "sum") -> np.ndarray:
    """Embeddings float32 of uint8 faces ``(N, S, S, 3)``: ``(N, D)``, or ``(N, 2 D)`` for concatenated flips.

    ``flip`` adds (``flip_mode="sum"``) or appends (``"concat"``) the mirrored
    face's embedding; either way the result is re-normalised to unit length.
    """
    batch = faces.astype(np.float32)
    if flip:
        batch = np.concatenate([batch, batch[:, :, ::-1, :]], axis=0)
    vectors = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
    if flip:
        n = faces.shape[0]
        vectors = (
            np.concatenate([vectors[:n], vectors[n:]], axis=1) if flip_mode == "concat" else vectors[:n] + vectors[n:]
        )
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


@dataclass(frozen=True)
class Embeddings:
    """``vectors[i]`` (float32, unit length; zeros when invalid) and ``valid[i]`` for ``sources[i]``."""

    sources: list[FaceSource]
    vectors: np.ndarray
    valid: np.ndarray

    @property
    def num_invalid(self) -> int:
        return int((~self.valid).sum())


def compute_embeddings(
    embedder: Embedder,
    sources: Sequence[FaceSource],
    cache_dir: Path | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    description: str = "embed",
) -> Embeddings:
    """Embed ``sources`` (deduplicated internally), reusing and updating the cache in ``cache_dir``."""
    sources = list(sources)
    unique = list(dict.fromkeys(sources))
    stamps = [_stamp(s.path) for s in unique]
    cached = _load_cache(cache_dir, embedder) if cache_dir is not None else {}
    dim = embedder.embedding_size
    vectors = np.zeros((len(unique), dim), dtype=np.float32)
    valid = np.zeros(len(unique), dtype=bool)
    todo = []
    for i, (source, stamp) in enumerate(zip(unique, stamps, strict=True)):
        hit = cached.get((source.signature(), stamp))
        if hit is not None and hit[0].shape == (dim,):
            vectors[i], valid[i] = hit
        else:
            todo.append(i)
    if todo:
        new_vectors, new_valid = _embed_uncached(embedder, [unique[i] for i in todo], batch_size, workers, description)
        vectors[todo], valid[todo] = new_vectors, new_valid
        if cache_dir is not None:
            _save_cache(cache_dir, embedder, unique, stamps, vectors, valid, cached)
    position = {source: i for i, source in enumerate(unique)}
    order = np.array([position[s] for s in sources], dtype=np.int64)
    return Embeddings(sources=sources, vectors=vectors[order], valid=valid[order])


def _stamp(path: Path) -> str:
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise FfemError(f"{path}: image not found") from exc
    return f"{info.st_size}:{info.st_mtime_ns}"


def _embed_uncached(
    embedder: Embedder, sources: list[FaceSource], batch_size: int, workers: int | None, description: str
):
    prep = embedder.prep
    vectors = np.zeros((len(sources), embedder.embedding_size), dtype=np.float32)
    valid = np.zeros(len(sources), dtype=bool)
    workers = workers or min(8, (os.cpu_count() or 2) + 1)
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(sources), unit="face")
        batches = (
            _detected_batches(sources, prep, batch_size, workers)
            if prep.detect
            else _prepared_batches(sources, prep, batch_size, workers)
        )
        for indices, faces in batches:
            ok = np.array([face is not None for face in faces])
            if ok.any():
                stacked = np.stack([face for face in faces if face is not None])
                vectors[np.asarray(indices)[ok]] = embed_faces(embedder.model, stacked, prep.flip, prep.flip_mode)
            valid[indices] = ok
            bar.advance(task, len(faces))
    return vectors, valid


def _prepared_batches(sources, prep: FacePrep, batch_size: int, workers: int) -> Iterator[tuple[list[int], list]]:
    """Yield ``(indices, faces)`` per batch; the next batches decode while the caller runs the model."""
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(start: int) -> list[Future]:
            return [pool.submit(_prepare_listed, source, prep) for source in sources[start : start + batch_size]]

        starts = list(range(0, len(sources), batch_size))
        pending = [submit(s) for s in starts[:2]]
        for i, start in enumerate(starts):
            futures = pending.pop(0)
            if i + 2 < len(starts):
                pending.append(submit(starts[i + 2]))
            yield list(range(start, start + len(futures))), [f.result() for f in futures]


def _detected_batches(sources, prep: FacePrep, batch_size: int, workers: int) -> Iterator[tuple[list[int], list]]:
    """Yield ``(indices, faces)`` per batch with faces found by ``inference.detection``'s batched MTCNN
    (the face ``ffem detect`` keeps; None where there is none)."""
    from ffem_cli.inference.detection import detect_images

    indices, faces = [], []
    for index, image, found in detect_images([s.path for s in sources], workers=min(workers, 4)):
        indices.append(index)
        faces.append(None if found is None else prepare_face(sources[index], prep, detection=found, image=image))
        if len(faces) == batch_size:
            yield indices, faces
            indices, faces = [], []
    if faces:
        yield indices, faces


def _prepare_listed(source: FaceSource, prep: FacePrep) -> np.ndarray | None:
    return None if source.unlisted else prepare_face(source, prep)


def _cache_file(cache_dir: Path, embedder: Embedder) -> Path:
    return Path(cache_dir) / embedder.cache_key()[:16] / "embeddings.npz"


def _load_cache(cache_dir: Path, embedder: Embedder) -> dict:
    path = _cache_file(cache_dir, embedder)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != embedder.cache_key():
                return {}
            keys = zip(data["signatures"].tolist(), data["stamps"].tolist(), strict=True)
            return {key: (v, bool(ok)) for key, v, ok in zip(keys, data["vectors"], data["valid"], strict=True)}
    except (OSError, KeyError, ValueError):
        return {}  # unreadable cache: recompute and overwrite


def _save_cache(cache_dir: Path, embedder: Embedder, sources, stamps, vectors, valid, previous: dict) -> None:
    entries = dict(previous)
    for source, stamp, vector, ok in zip(sources, stamps, vectors, valid, strict=True):
        entries[(source.signature(), stamp)] = (vector, bool(ok))
    keys = list(entries)
    path = _cache_file(cache_dir, embedder)
    atomic.write_json(
        path.parent / "settings.json",
        {"model": embedder.description, "model_sha256": embedder.model_sha256, "prep": asdict(embedder.prep)},
    )
    with atomic.atomic_open(path, "wb") as handle:
        np.savez(
            handle,
            key=np.array(embedder.cache_key()),
            signatures=np.array([k[0] for k in keys]),
            stamps=np.array([k[1] for k in keys]),
            vectors=np.stack([entries[k][0] for k in keys]).astype(np.float32),
            valid=np.array([entries[k][1] for k in keys], dtype=bool),
        )
