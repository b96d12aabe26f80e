"""Batched MTCNN face detection over an identity folder: the core of ``ffem detect``.

MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks", IEEE SPL 2016) from the ``mtcnn`` package,
whose weights ship inside it. The package accepts a list of images and pads
them to the largest one, building the image pyramid of the largest; so ffem
reads every image header first, groups images of exactly the same size into
batches (no padding, no wasted pyramid levels; same-size batches also avoid
the package's padding-offset correction, which misassigns offsets when an
image of the batch has no face), and decodes the next batches in a thread
pool while MTCNN runs on the current one.

Per image one face is kept, chosen by ``DetectOptions.keep`` (``choose_face``):
``largest``, the largest ``area x confidence`` (the main subject of a
training photo: big and clearly a face), or ``central``, the face at the
photo's centre (sets cut around their subject: LFW, CASIA-WebFace, VGGFace2
loose crops). The other faces are counted, not kept. Its box is integer pixels ``x1, y1, x2, y2``
(left, top, right, bottom; right/bottom exclusive) clipped to the image,
with the five landmarks (float pixels) and the ONet score.

Images without a usable face go to a rejects file with a reason:
``no-face``, ``too-small`` (shorter side below the minimum face size),
``corrupt``, ``unreadable`` (no permission), ``missing`` (also a broken
symlink), ``symlink-loop``, ``outside-root`` (a symlink leaving ROOT, see
``images.path_under``), ``too-large`` (header over ``--max-pixels``) or
``bad-name`` (a file name that is not UTF-8, which JSON cannot hold; the
rejects file shows it with ``\\xNN`` escapes). Photos whose longer side
exceeds ``--max-side`` are shrunk before detection (JPEGs decoded at a
reduced scale) and their box and landmarks mapped back to full-size pixels.

Labels are ``0..N-1`` over the sorted names of the identities that keep at
least one face (an identity whose photos were all rejected gets no label,
so the list has no label gaps); ``<list stem>.label_map.json`` is written
beside the list, after it, only when the run succeeds.

Progress is checkpointed every ``checkpoint_every`` images to a hidden
``.<output name>.checkpoint.json`` (atomic writes), which records the real
path of ROOT and each image's size and modification time: resuming on
another ROOT is refused, and an image changed since is processed again. The list under its final
name is only written, atomically, when the run completes, so a file there is
always complete. ``resume=True`` continues from the checkpoint (or from a
finished list and its rejects file, processing only new images).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ffem_cli import atomic
from ffem_cli.data import image_list
from ffem_cli.data.image_list import FaceEntry
from ffem_cli.errors import FfemError
from ffem_cli.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    image_size,
    is_utf8_name,
    path_under,
    read_rgb,
    scan_identity_folder,
    shown_name,
)

REJECT_REASONS = (
    "no-face",
    "too-small",
    "corrupt",
    "unreadable",
    "missing",
    "symlink-loop",
    "outside-root",
    "too-large",
    "bad-name",
)
# Most pixels decoded into one MTCNN call: 16 images of 512x512. Bigger photos
# get smaller batches so that a batch of camera images stays within memory.
BATCH_PIXEL_BUDGET = 16 * 512 * 512
KEEP_RULES = ("largest", "central")


@dataclass(frozen=True)
class DetectOptions:
    """Detection settings (the CLI options of ``ffem detect``).

    ``thresholds`` are the PNet, RNet and ONet confidence thresholds; the
    kept score is the ONet one. ``min_face_size`` is in pixels (smaller faces
    are not searched: fewer pyramid levels, faster). ``workers`` decode
    threads; ``checkpoint_every`` images between checkpoints. ``keep``: which
    face of a photo with several is listed (``KEEP_RULES``, see ``choose_face``).
    """

    batch_size: int = 16
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)
    workers: int = 4
    checkpoint_every: int = 256
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = 2048
    follow_symlinks: bool = False
    keep: str = "largest"

    def __post_init__(self) -> None:
        if self.keep not in KEEP_RULES:
            raise FfemError(f"--keep must be one of {', '.join(KEEP_RULES)}, got {self.keep!r}")
        if self.batch_size < 1:
            raise FfemError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.min_face_size < 12:
            raise FfemError(
                f"--min-face-size must be at least 12 pixels (MTCNN's smallest window), got {self.min_face_size}"
            )
        if len(self.thresholds) != 3 or not all(0.0 < t < 1.0 for t in self.thresholds):
            raise FfemError(f"--threshold values must lie strictly between 0 and 1, got {self.thresholds}")
        if self.workers < 1:
            raise FfemError(f"--workers must be at least 1, got {self.workers}")
        if self.max_pixels < 1:
            raise FfemError(f"--max-pixels must be at least 1, got {self.max_pixels}")
        if self.max_side < self.min_face_size:
            raise FfemError(f"--max-side must be at least --min-face-size ({self.min_face_size}), got {self.max_side}")


@dataclass(frozen=True)
class Face:
    """One MTCNN detection in float pixels.

    ``box``: ``(4,)`` x1, y1, x2, y2; ``landmarks``: ``(5, 2)`` x, y of left eye,
    right eye, nose, left and right mouth corner; ``score``: ONet confidence.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float


@dataclass(frozen=True)
class Reject:
    """Why an image has no entry: ``reason`` (one of ``REJECT_REASONS``) and a detail."""

    reason: str
    detail: str


@dataclass
class DetectSummary:
    """Counts of one ``detect_folder`` run (``skipped``: done by an earlier run, resumed)."""

    images: int = 0
    skipped: int = 0
    processed: int = 0
    kept: int = 0
    rejected: collections.Counter = field(default_factory=collections.Counter)
    extra_faces: int = 0
    images_with_extra_faces: int = 0
    downscaled: int = 0
    identities: int = 0
    identities_without_face: list[str] = field(default_factory=list)
    seconds: float = 0.0
    startup_seconds: float = 0.0  # loading TensorFlow and the MTCNN weights, part of ``seconds``
    output: Path | None = None
    rejects_path: Path | None = None
    label_map_path: Path | None = None

    @property
    def images_per_second(self) -> float:
        """Images processed per second of work, excluding the one-off detector start-up."""
        working = self.seconds - self.startup_seconds
        return self.processed / working if working > 0 else 0.0


def mtcnn_pyramid(width: int, height: int, min_face_size: int, scale_factor: float, min_size: int = 12) -> np.ndarray:
    """The image pyramid of Zhang et al.'s reference MTCNN: scales ``m * f**i``, ``m = min_size / min_face_size``,
    while the scaled short side stays at least ``min_size`` (12) pixels.

    mtcnn 1.0.0's ``build_scale_pyramid`` counts the levels as if ``m`` were 1,
    so every ``--min-face-size`` above about 20 adds levels smaller than PNet's
    window, PNet fails on them, and the whole batch comes back with no face.
    """
    scale = min_size / min_face_size
    short_side = min(width, height) * scale
    scales = []
    while short_side >= min_size:
        scales.append(scale)
        scale *= scale_factor
        short_side *= scale_factor
    return np.asarray(scales)


def make_detector():
    """A ready MTCNN (PNet + RNet + ONet, landmarks on), with the reference image pyramid; imports TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mtcnn import MTCNN
    from mtcnn.stages import stage_pnet

    stage_pnet.build_scale_pyramid = mtcnn_pyramid  # see mtcnn_pyramid: mtcnn 1.0.0's own loses every face above 20 px
    return MTCNN()


def detect_batch(detector, images: list[np.ndarray], options: DetectOptions) -> list[list[Face]]:
    """Run MTCNN once on ``images`` (uint8 ``(H, W, 3)``, all the same shape).

    Returns, per image, its faces in float pixels (unclipped).
    """
    if len({image.shape for image in images}) > 1:
        raise ValueError("detect_batch needs images of one shape; group them first")
    p_threshold, r_threshold, o_threshold = options.thresholds
    rows = detector.detect_faces(
        [image.astype(np.float32) for image in images],
        output_type="numpy",
        box_format="xyxy",
        postprocess=False,  # same-size batch: no padding to undo; clipping is done here
        min_face_size=options.min_face_size,
        threshold_pnet=p_threshold,
        threshold_rnet=r_threshold,
        threshold_onet=o_threshold,
    )
    faces: list[list[Face]] = [[] for _ in images]
    for row in np.asarray(rows, dtype=np.float64):
        # row: image index, x1, y1, x2, y2, score, 5 landmark x, 5 landmark y
        landmarks = np.stack([row[6:11], row[11:16]], axis=1).astype(np.float32)
        faces[int(row[0])].append(Face(row[1:5].copy(), landmarks, float(row[5])))
    return faces


def clip_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Round a float ``x1, y1, x2, y2`` box to integers inside a ``width x height`` image (never empty)."""
    x1 = int(np.clip(round(box[0]), 0, width - 1))
    y1 = int(np.clip(round(box[1]), 0, height - 1))
    x2 = int(np.clip(round(box[2]), x1 + 1, width))
    y2 = int(np.clip(round(box[3]), y1 + 1, height))
    return x1, y1, x2, y2


def choose_face(faces: list[Face], width: int, height: int, keep: str = "largest") -> tuple[FaceEntry, int] | None:
    """The face to list for a photo, by rule ``keep``.

    ``largest``: the largest clipped area x confidence. ``central``: of the
    faces whose clipped box contains the photo's centre, the largest area x
    confidence; when no box contains it, the face whose box centre is nearest
    to it. Returns ``(entry with label 0, number of other faces)`` or ``None``
    when ``faces`` is empty. The caller sets the label.
    """
    if not faces:
        return None
    boxes = [clip_box(face.box, width, height) for face in faces]
    weights = np.array(
        [(x2 - x1) * (y2 - y1) * face.score for (x1, y1, x2, y2), face in zip(boxes, faces, strict=True)]
    )
    if keep == "central":
        cx, cy = width / 2, height / 2
        covering = np.array([x1 <= cx <= x2 and y1 <= cy <= y2 for x1, y1, x2, y2 in boxes])
        if covering.any():
            weights = np.where(covering, weights, -1.0)
        else:
            weights = -np.array([np.hypot((x1 + x2) / 2 - cx, (y1 + y2) / 2 - cy) for x1, y1, x2, y2 in boxes])
    best = int(np.argmax(weights))
    return FaceEntry(0, boxes[best], faces[best].landmarks, faces[best].score), len(faces) - 1


def _reject_for(exc: ImageReadError) -> Reject:
    """Map a read failure to a reject reason."""
    if isinstance(exc.__cause__, PermissionError):
        return Reject("unreadable", "permission denied")
    return Reject(exc.reason if exc.reason in REJECT_REASONS else "corrupt", exc.detail)


def _header(root: Path, rel: str, options: DetectOptions) -> tuple[int, int] | Reject:
    try:
        return image_size(path_under(root, rel, options.follow_symlinks), options.max_pixels)
    except ImageReadError as exc:
        return _reject_for(exc)


def file_stamp(path: Path) -> list[int] | None:
    """``[size in bytes, modification time in ns]`` of ``path`` (through symlinks), ``None`` if it cannot be read."""
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def plan_batches(sizes: dict[str, tuple[int, int]], options: DetectOptions) -> list[list[str]]:
    """Group images of identical ``(width, height)`` into batches.

    A batch holds at most ``batch_size`` images and at most
    ``BATCH_PIXEL_BUDGET`` pixels (at least one image). Order: by size, then path.
    """
    groups: dict[tuple[int, int], list[str]] = collections.defaultdict(list)
    for path, size in sorted(sizes.items()):
        groups[size].append(path)
    batches = []
    for (width, height), paths in sorted(groups.items()):
        step = max(1, min(options.batch_size, BATCH_PIXEL_BUDGET // (width * height)))
        batches.extend(paths[i : i + step] for i in range(0, len(paths), step))
    return batches


def _decode_batch(root: Path, batch: list[str], options: DetectOptions) -> list[tuple[str, np.ndarray | Reject]]:
    decoded: list[tuple[str, np.ndarray | Reject]] = []
    for rel in batch:
        try:
            path = path_under(root, rel, options.follow_symlinks)
            decoded.append((rel, read_rgb(path, options.max_pixels, options.max_side)))
        except ImageReadError as exc:
            decoded.append((rel, _reject_for(exc)))
    return decoded


def _prefetch(
    pool: concurrent.futures.Executor, root: Path, batches: list[list[str]], options: DetectOptions, depth: int
) -> Iterator[list]:
    """Decoded batches in order, keeping ``depth`` batches decoding ahead."""
    pending: collections.deque = collections.deque()
    upcoming = iter(batches)
    for batch in upcoming:
        pending.append(pool.submit(_decode_batch, root, batch, options))
        if len(pending) >= depth:
            break
    while pending:
        decoded = pending.popleft().result()
        next_batch = next(upcoming, None)
        if next_batch is not None:
            pending.append(pool.submit(_decode_batch, root, next_batch, options))
        yield decoded


def default_rejects_path(output: str | os.PathLike) -> Path:
    """``<output stem>.rejects.json`` beside the output."""
    output = Path(output)
    return output.with_name(f"{output.stem}.rejects.json")


def checkpoint_path(output: str | os.PathLike) -> Path:
    """The hidden checkpoint of an unfinished run: ``.<output name>.checkpoint.json``."""
    output = Path(output)
    return output.with_name(f".{output.name}.checkpoint.json")


def _rejects_to_json(rejects: dict[str, Reject]) -> dict[str, dict[str, str]]:
    return {shown_name(rel): {"reason": r.reason, "detail": r.detail} for rel, r in sorted(rejects.items())}


def _rejects_from_json(raw: Any, source: Path) -> dict[str, Reject]:
    if not isinstance(raw, dict):
        raise FfemError(f"{source}: rejects must be an object {{path: {{reason, detail}}}}")
    rejects = {}
    for rel, value in raw.items():
        if not isinstance(value, dict) or value.get("reason") not in REJECT_REASONS:
            raise FfemError(
                f'{source}: {json.dumps(rel)}: not a reject record {{"reason": one of {", ".join(REJECT_REASONS)}, "detail": ...}}'
            )
        rejects[rel] = Reject(value["reason"], str(value.get("detail", "")))
    return rejects


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FfemError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; delete it to start over"
        ) from None
    except UnicodeDecodeError as exc:
        raise FfemError(f"{path}: not UTF-8 text (byte {exc.start}); delete it to start over") from None
    except (ValueError, RecursionError) as exc:
        raise FfemError(
            f"{path}: unreadable JSON ({str(exc)[:80] or type(exc).__name__}); delete it to start over"
        ) from None


def load_previous(
    output: Path, rejects_path: Path, root: Path, keep: str
) -> tuple[dict[str, FaceEntry], dict[str, Reject]]:
    """What an earlier run finished: its checkpoint if present, else the final list and rejects.

    A checkpoint made on another ROOT, or with another ``--keep`` rule, is
    refused; its images whose size or modification time changed since are
    left out (processed again).
    """
    checkpoint = checkpoint_path(output)
    if checkpoint.exists():
        raw = _read_json(checkpoint)
        if not isinstance(raw, dict) or not isinstance(raw.get("entries"), dict):
            raise FfemError(f"{checkpoint}: not an ffem detect checkpoint; delete it to start over")
        made_on = Path(str(raw.get("root", ""))).resolve()
        if made_on != root.resolve():
            raise FfemError(
                f"{checkpoint}: made on {made_on}, not on {root.resolve()}; "
                "rerun without --resume (or delete the checkpoint) to start over"
            )
        made_with = str(raw.get("keep", "largest"))
        if made_with != keep:
            raise FfemError(
                f"{checkpoint}: made with --keep {made_with}, not {keep}; "
                "resume with the same rule, or rerun without --resume to start over"
            )
        entries = {}
        for rel, value in raw["entries"].items():
            entry, problems = image_list.parse_entry(rel, value)
            if entry is None:
                raise FfemError(f"{checkpoint}: {json.dumps(rel)}: {problems[0]}; delete it to start over")
            entries[rel] = entry
        rejects = _rejects_from_json(raw.get("rejects", {}), checkpoint)
        stamps = raw.get("stamps") if isinstance(raw.get("stamps"), dict) else {}
        changed = {rel for rel, stamp in stamps.items() if file_stamp(root / rel) != stamp}
        return (
            {rel: e for rel, e in entries.items() if rel not in changed},
            {rel: r for rel, r in rejects.items() if rel not in changed},
        )
    entries = image_list.load_image_list(output) if output.exists() else {}
    rejects = _rejects_from_json(_read_json(rejects_path), rejects_path) if rejects_path.exists() else {}
    return entries, rejects


def _labelled(entries: dict[str, FaceEntry], depth: int = 1) -> tuple[dict[str, FaceEntry], dict[str, int]]:
    """Relabel entries 0..N-1 over the sorted identity names that have an entry.

    The identity is the leaf folder, named by its path under ROOT; at depth 2
    the first folder is also kept as the entry's group.
    """
    names = sorted({rel.rsplit("/", 1)[0] for rel in entries})
    label_map = {name: label for label, name in enumerate(names)}
    relabelled = {
        rel: FaceEntry(
            label_map[rel.rsplit("/", 1)[0]], e.box, e.landmarks, e.score, rel.split("/", 1)[0] if depth == 2 else None
        )
        for rel, e in entries.items()
    }
    return relabelled, label_map


class _Run:
    """The state of one detection run: results so far, checkpointing, progress."""

    def __init__(
        self,
        root: Path,
        todo: list[str],
        options: DetectOptions,
        checkpoint: Path,
        entries: dict[str, FaceEntry],
        rejects: dict[str, Reject],
        summary: DetectSummary,
        progress: Callable[[int, int], None] | None,
    ):
        self.root, self.todo, self.options, self.checkpoint = root, todo, options, checkpoint
        self.entries, self.rejects, self.summary, self.progress = entries, rejects, summary, progress
        self.done = 0
        self.since_checkpoint = 0
        self.stamps: dict[str, list[int] | None] = {}  # file_stamp of each image done, for resume

    def record(self, count: int) -> None:
        """``count`` more images are finished: report progress, checkpoint every so often."""
        self.done += count
        self.since_checkpoint += count
        if self.progress is not None:
            self.progress(self.done, len(self.todo))
        if self.since_checkpoint >= self.options.checkpoint_every and self.done < len(self.todo):
            self.save_checkpoint()

    def save_checkpoint(self) -> None:
        for rel in [*self.entries, *self.rejects]:
            if rel not in self.stamps and is_utf8_name(rel):
                self.stamps[rel] = file_stamp(self.root / rel)
        atomic.write_json(
            self.checkpoint,
            {
                "root": str(self.root.resolve()),
                "keep": self.options.keep,
                "entries": {rel: self.entries[rel].to_json() for rel in sorted(self.entries)},
                "rejects": _rejects_to_json(self.rejects),
                "stamps": self.stamps,
            },
            indent=None,
        )
        self.since_checkpoint = 0

    def keep(self, rel: str, image: np.ndarray, size: tuple[int, int], faces: list[Face]) -> None:
        """Keep the chosen face of ``image``, detected at its shape, in pixels of the full ``size`` (w, h)."""
        if (size[0] >= size[1]) != (image.shape[1] >= image.shape[0]):
            size = (size[1], size[0])  # a PNG whose EXIF rotation sits after its pixels: the header missed it
        width, height = size
        if (image.shape[1], image.shape[0]) != size:
            self.summary.downscaled += 1
            scale = np.array([width / image.shape[1], height / image.shape[0]])
            faces = [
                Face(face.box * np.tile(scale, 2), face.landmarks * scale.astype(np.float32), face.score)
                for face in faces
            ]
        chosen = choose_face(faces, width=width, height=height, keep=self.options.keep)
        if chosen is None:
            self.rejects[rel] = Reject(
                "no-face", f"no face >= {self.options.min_face_size}px above threshold {self.options.thresholds[2]}"
            )
            return
        self.entries[rel], extra = chosen
        self.summary.extra_faces += extra
        self.summary.images_with_extra_faces += extra > 0

    def run(self, detector) -> None:
        """Header pass, then decode (thread pool, prefetching) and detect batch by batch."""
        options = self.options
        with concurrent.futures.ThreadPoolExecutor(max_workers=options.workers) as pool:
            sizes: dict[str, tuple[int, int]] = {}
            headers = pool.map(lambda rel: _header(self.root, rel, options), self.todo)
            for rel, header in zip(self.todo, headers, strict=True):
                if isinstance(header, Reject):
                    self.rejects[rel] = header
                elif min(header) < options.min_face_size:
                    self.rejects[rel] = Reject(
                        "too-small", f"{header[0]}x{header[1]} image, --min-face-size {options.min_face_size}"
                    )
                else:
                    sizes[rel] = header
            if len(sizes) < len(self.todo):
                self.record(len(self.todo) - len(sizes))
            batches = plan_batches(sizes, options)
            if batches and detector is None:
                loading = time.perf_counter()
                detector = make_detector()
                self.summary.startup_seconds = time.perf_counter() - loading
            for decoded in _prefetch(pool, self.root, batches, options, depth=max(2, options.workers)):
                by_shape: dict[tuple, list[tuple[str, np.ndarray]]] = collections.defaultdict(list)
                for rel, image in decoded:
                    if isinstance(image, Reject):
                        self.rejects[rel] = image
                    else:
                        by_shape[image.shape].append((rel, image))
                for group in by_shape.values():
                    found = detect_batch(detector, [image for _, image in group], options)
                    for (rel, image), faces in zip(group, found, strict=True):
                        self.keep(rel, image, sizes[rel], faces)
                self.record(len(decoded))


def detect_folder(
    root: str | os.PathLike,
    output: str | os.PathLike,
    options: DetectOptions = DetectOptions(),
    *,
    resume: bool = False,
    rejects_path: str | os.PathLike | None = None,
    detector=None,
    progress: Callable[[int, int], None] | None = None,
    depth: int = 1,
) -> DetectSummary:
    """Detect one face per image of ``root/<identity>/<image>``; write the image list.

    ``depth=2`` reads ``root/<group>/<identity>/<image>`` (RFW, BUPT): labels
    go to the leaf folders, named ``<group>/<identity>``, and each entry keeps
    its group.

    Writes ``output`` (seed format, see ``data.image_list``), ``<stem>.label_map.json``
    beside it and the rejects file (default ``<output stem>.rejects.json``).
    ``progress(done, total)`` is called after each batch. ``detector`` is an
    MTCNN instance to reuse (one is made when ``None``). Raises ``FfemError``
    on a bad folder layout or when no image has a face (the rejects file is
    still written so the reasons can be read). An interrupted run (Ctrl-C, a
    crash) saves its checkpoint before the exception propagates. ``kept`` and
    ``rejected`` in the summary count the whole list, resumed part included.
    """
    started = time.perf_counter()
    root, output = Path(root), Path(output)
    if depth not in (1, 2):
        raise FfemError(f"--depth must be 1 or 2, got {depth}")
    folder = scan_identity_folder(root, depth)
    rejects_path = Path(rejects_path) if rejects_path else default_rejects_path(output)
    checkpoint = checkpoint_path(output)
    summary = DetectSummary(images=len(folder.paths), output=output, rejects_path=rejects_path)

    entries: dict[str, FaceEntry] = {}
    rejects: dict[str, Reject] = {}
    if resume:
        wanted = set(folder.paths)
        old_entries, old_rejects = load_previous(output, rejects_path, root, options.keep)
        entries = {rel: e for rel, e in old_entries.items() if rel in wanted}
        rejects = {rel: r for rel, r in old_rejects.items() if rel in wanted and rel not in entries}
    for rel in folder.paths:
        if not is_utf8_name(rel):
            rejects[rel] = Reject("bad-name", "the file name is not UTF-8; rename it")
    todo = [rel for rel in folder.paths if rel not in entries and rel not in rejects]
    summary.skipped = len(folder.paths) - len(todo)

    run = _Run(root, todo, options, checkpoint, entries, rejects, summary, progress)
    try:
        run.run(detector)
    except BaseException:
        if run.done:
            run.save_checkpoint()
        raise

    summary.processed = len(todo)
    summary.rejected = collections.Counter(r.reason for r in rejects.values())
    summary.kept = len(entries)
    atomic.write_json(rejects_path, _rejects_to_json(rejects))
    if not entries:
        checkpoint.unlink(missing_ok=True)
        raise FfemError(f"{root}: no face found in any of {len(folder.paths)} images; reasons are in {rejects_path}")
    labelled, label_map = _labelled(entries, depth)
    summary.label_map_path = image_list.label_map_path(output)
    image_list.write_image_list(output, labelled)
    image_list.write_label_map(summary.label_map_path, label_map)
    checkpoint.unlink(missing_ok=True)
    summary.identities = len(label_map)
    summary.identities_without_face = sorted(set(folder.label_map) - set(label_map))
    summary.seconds = time.perf_counter() - started
    return summary
