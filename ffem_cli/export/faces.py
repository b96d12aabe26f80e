"""Faces for the parity check and int8 calibration, prepared as in training.

Three sources, each giving uint8 ``(N, S, S, 3)`` RGB crops:

* a pack directory (``ffem pack`` output): the faces as training saw them;
* a folder of images: with an ``image_list.json`` the listed faces are cut
  by the run's ``FacePrep`` (``inference.embedding``: the cut eval uses, so
  an aligned run and a list without landmarks give margin crops of the
  boxes), otherwise every image is taken as an already-cropped face and
  resized;
* synthetic drawn faces (``data.synthetic``), cut by the same ``FacePrep``:
  the fallback when no real faces are given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffem_cli.data.image_list import load_image_list
from ffem_cli.data.packdir import PackDir
from ffem_cli.errors import FfemError
from ffem_cli.images import ImageReadError, is_image_file, read_rgb
from ffem_cli.inference.embedding import FacePrep


def pack_faces(pack_dir: Path, image_size: int, count: int) -> np.ndarray:
    """The first ``count`` faces of a pack (file order), uint8; ``FfemError`` on a size mismatch."""
    from ffem_cli.data.pipeline import eval_dataset

    pack = PackDir(pack_dir)
    pack_size = int(pack.manifest()["image_size"])  # a required key (PackDir.manifest checks it)
    if pack_size != image_size:
        raise FfemError(
            f"{pack_dir}: pack faces are {pack_size}x{pack_size} but the model takes {image_size}x{image_size}"
        )
    batches, total = [], 0
    for images, _labels, _paths in eval_dataset(pack, batch_size=64):
        batch = np.clip(np.rint(np.asarray(images)), 0, 255).astype(np.uint8)
        batches.append(batch[: count - total])
        total += len(batches[-1])
        if total >= count:
            break
    if total == 0:
        raise FfemError(f"{pack_dir}: the pack holds no faces")
    return np.concatenate(batches)


def folder_faces(folder: Path, prep: FacePrep, count: int) -> np.ndarray:
    """Up to ``count`` faces from a folder of images (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FfemError(f"{folder}: not a folder")
    list_path = folder / "image_list.json"
    if list_path.is_file():
        entries = load_image_list(list_path)
        items = [(folder / key, entry.box, entry.landmarks) for key, entry in entries.items()]
    else:
        items = [(path, None, None) for path in sorted(folder.rglob("*")) if is_image_file(path)]
    faces = []
    for path, box, landmarks in items[:count]:
        try:
            faces.append(prep.cut(read_rgb(path), box, landmarks))
        except ImageReadError as exc:
            raise FfemError(str(exc)) from exc
        except ValueError as exc:  # e.g. an empty box or degenerate landmarks
            raise FfemError(f"{list_path}: {path.relative_to(folder).as_posix()}: cannot cut the face ({exc})") from exc
    if not faces:
        raise FfemError(f"{folder}: no face images found")
    return np.stack(faces)


def synthetic_faces(prep: FacePrep, count: int, seed: int = 0) -> np.ndarray:
    """``count`` drawn faces of ``max(2, count // 4)`` synthetic identities, cut by ``prep``."""
    from ffem_cli.data import synthetic

    rng = np.random.default_rng(seed)
    people = [synthetic.make_identity(rng) for _ in range(max(2, count // 4))]
    faces = []
    for index in range(count):
        pixels, entry = synthetic.render(people[index % len(people)], rng)
        box = (entry["x1"], entry["y1"], entry["x2"], entry["y2"])
        faces.append(prep.cut(pixels, box, np.asarray(entry["landmarks"])))
    return np.stack(faces)
