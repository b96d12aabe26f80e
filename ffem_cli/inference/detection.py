"""Batched MTCNN for commands that embed photos (``eval``, ``embed``, ``search``, ``verify``, ``calibrate`` with ``--detect``).

The same path as ``ffem detect`` (``data.detect``): image headers are read
first, images of exactly the same size are batched together
(``detect.plan_batches``: up to ``batch_size`` images and
``BATCH_PIXEL_BUDGET`` pixels per MTCNN call), the next batches decode in a
thread pool while MTCNN runs on the current one, and the face kept is
``detect.choose_face``'s by ``options.keep`` (default: largest area x confidence). An image smaller than
``min_face_size`` has no face, as ``ffem detect`` rejects it.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ffem_cli.data import detect
from ffem_cli.errors import FfemError
from ffem_cli.images import ImageReadError, image_size, read_rgb

Detection = tuple[tuple[float, float, float, float], np.ndarray]  # box x1, y1, x2, y2; landmarks (5, 2)


def _header(path: Path) -> tuple[int, int]:
    try:
        return image_size(path)
    except ImageReadError as exc:
        if exc.reason == "missing" and exc.detail == "no such file":
            raise FfemError(f"{path}: image not found") from None
        raise FfemError(f"{path}: cannot read image ({exc.reason}: {exc.detail})") from None


def _decode(path: Path) -> np.ndarray:
    try:
        return read_rgb(path)
    except ImageReadError as exc:
        raise FfemError(f"{path}: cannot read image ({exc.reason}: {exc.detail})") from exc


@functools.lru_cache(maxsize=1)
def shared_detector():
    """One MTCNN per process: building it loads TensorFlow and the weights (seconds)."""
    return detect.make_detector()


def detect_images(
    paths: Sequence[Path], options: detect.DetectOptions = detect.DetectOptions(), detector=None, workers: int = 4
) -> Iterator[tuple[int, np.ndarray | None, Detection | None]]:
    """Yield ``(index into paths, decoded image or None, detection or None)`` for every path, in batch order.

    ``detector``: an MTCNN to use (default ``shared_detector()``). Unreadable
    images raise ``FfemError`` naming the file.
    """
    paths = [Path(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sizes = dict(enumerate(pool.map(_header, paths)))
        for index, size in sizes.items():
            if min(size) < options.min_face_size:
                yield index, None, None
        batches = detect.plan_batches({i: s for i, s in sizes.items() if min(s) >= options.min_face_size}, options)
        if batches and detector is None:
            detector = shared_detector()
        pending: collections.deque[list[Future]] = collections.deque()
        upcoming = iter(batches)

        def submit() -> None:
            batch = next(upcoming, None)
            if batch is not None:
                pending.append([pool.submit(lambda i: (i, _decode(paths[i])), i) for i in batch])

        for _ in range(max(2, workers)):
            submit()
        while pending:
            decoded = [future.result() for future in pending.popleft()]
            submit()
            by_shape: dict[tuple, list[tuple[int, np.ndarray]]] = collections.defaultdict(list)
            for index, image in decoded:
                by_shape[image.shape].append((index, image))
            for group in by_shape.values():
                found = detect.detect_batch(detector, [image for _, image in group], options)
                for (index, image), faces in zip(group, found, strict=True):
                    chosen = detect.choose_face(faces, image.shape[1], image.shape[0], options.keep)
                    yield (
                        index,
                        image,
                        None if chosen is None else (chosen[0].box, np.asarray(chosen[0].landmarks, np.float64)),
                    )
