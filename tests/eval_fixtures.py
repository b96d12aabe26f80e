"""Builders for the eval tests: a tiny embedding model (run dir + .keras) and an RFW tree
in the exact official layout and line formats (synthetic drawn faces, not people)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from ffem_cli.data import synthetic

RACES = ("African", "Asian", "Caucasian", "Indian")
IMAGE_SIZE = 32


def make_run(root: Path, embedding_size: int = 16, seed: int = 0) -> Path:
    """``root/run`` with ``embedder.keras`` (tiny backbone, GAP, untrained, weights from ``seed``) and ``run.toml``."""
    import keras

    from ffem_cli.models import build_embedder
    from ffem_cli.rundir import RunDir

    keras.utils.set_random_seed(seed)
    model = build_embedder("tiny", pooling="gap", embedding_size=embedding_size, input_size=IMAGE_SIZE)
    run = RunDir(root / "run")
    run.path.mkdir(parents=True)
    model.save(run.embedder_path)
    run.write_config(
        {
            "data": {
                "pack": "/nowhere/pack",
                "image_size": IMAGE_SIZE,
                "crop": "margin",
                "margin": 0.2,
                "num_classes": 4,
            },
            "model": {"backbone": "tiny", "pooling": "gap", "embedding_size": embedding_size},
        }
    )
    return run.path


def make_rfw(root: Path, identities: int = 4, seed: int = 0, landmarks: bool = True) -> Path:
    """``root/RFW`` in the official test layout; returns ``root/RFW``.

    Per race: ``identities`` people with 3 images each plus one single-image
    person; identity ids look like Freebase mids (``m.0abc12``), images
    ``<id>_000N.jpg``. ``<Race>_pairs.txt``: 10 folds x (2 same + 2 different)
    tab-separated lines, no header; ``<Race>_people.txt``: ``id<TAB>count``;
    ``<Race>_lmk.txt``: ``/test/data/<Race>/<id>/<file> <label>`` + 10 numbers.
    """
    rng = np.random.default_rng(seed)
    base = root / "RFW" / "images" / "test"
    for r, race in enumerate(RACES):
        data = base / "data" / race
        txts = base / "txts" / race
        txts.mkdir(parents=True)
        people, lmk_lines, counts = [], [], []
        for i in range(identities + 1):
            mid = f"m.0{r}{i:02d}x{rng.integers(100, 999)}"
            count = 3 if i < identities else 1
            person = synthetic.make_identity(rng)
            (data / mid).mkdir(parents=True)
            for n in range(1, count + 1):
                pixels, entry = synthetic.render(person, rng, canvas=64)
                name = f"{mid}_{n:04d}.jpg"
                Image.fromarray(pixels).save(data / mid / name, quality=92)
                coords = " ".join(f"{v:.3f}" for point in entry["landmarks"] for v in point)
                lmk_lines.append(f"/test/data/{race}/{mid}/{name}\t{i}\t{coords}")
            people.append(mid)
            counts.append(count)
        (txts / f"{race}_people.txt").write_text("".join(f"{p}\t{c}\n" for p, c in zip(people, counts, strict=True)))
        if landmarks:
            (txts / f"{race}_lmk.txt").write_text("\n".join(lmk_lines) + "\n")
        lines = []
        for fold in range(10):
            for j in range(2):
                mid = people[(fold + j) % identities]
                a, b = (1, 2) if j == 0 else (2, 3)
                lines.append(f"{mid}\t{a}\t{b}")
            for j in range(2):
                first, second = people[(fold + j) % identities], people[(fold + j + 1) % (identities + 1)]
                lines.append(f"{first}\t1\t{second}\t1")
        (txts / f"{race}_pairs.txt").write_text("\n".join(lines) + "\n")
    return root / "RFW"


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def write_bin(path, pairs: int, seed: int, as_array: bool) -> None:
    """An insightface-style .bin of 112x112 synthetic faces: alternating same / different pairs."""
    rng = np.random.default_rng(seed)
    people = [synthetic.make_identity(rng) for _ in range(4)]
    images, issame = [], []
    for i in range(pairs):
        same = i % 2 == 0
        first, second = people[i % 4], people[i % 4] if same else people[(i + 1) % 4]
        for person in (first, second):
            pixels, _ = synthetic.render(person, rng, canvas=112)
            images.append(_jpeg(pixels))
        issame.append(same)
    path.write_bytes(pickle.dumps((images, np.array(issame) if as_array else issame), protocol=4))
