"""A TensorBoard projector folder for a gallery (``ffem map --projector DIR``), as the FFEM
seed 000 wrote for its embeddings.

``DIR`` holds, written as one atomic folder:

- ``embeddings.tsv``: one row per face, D tab-separated float32 values;
- ``metadata.tsv``: a header ``identity<TAB>path`` and one row per face;
- ``sprite.png``: the faces' thumbnails in a square grid, row by row in the
  same order (side ``single_image_dim``, at most 8192 px in all, the
  projector's limit);
- ``projector_config.pbtxt``: the projector's config naming the three files.

``tensorboard --logdir DIR`` then shows them under "Projector".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ffem_cli import atomic
from ffem_cli.errors import FfemError
from ffem_cli.inference.facemap import _thumbnail

SPRITE_LIMIT = 8192  # pixels per side TensorBoard's projector accepts
MAX_THUMBNAIL = 64
CONFIG = """embeddings {{
  tensor_name: "{name}"
  tensor_path: "embeddings.tsv"
  metadata_path: "metadata.tsv"
  sprite {{
    image_path: "sprite.png"
    single_image_dim: {side}
    single_image_dim: {side}
  }}
}}
"""


def _tsv_field(text: str) -> str:
    """A metadata cell: tabs and newlines would break the table, so they become spaces."""
    return " ".join(str(text).split("\t")).replace("\n", " ").replace("\r", " ")


def write_projector(
    directory: Path,
    vectors: np.ndarray,
    paths: Sequence[str],
    identities: Sequence[str] | None,
    name: str = "ffem",
) -> int:
    """Write the projector folder; returns the thumbnail side in pixels.

    ``vectors`` (N, D) float; ``paths`` N image paths (thumbnails are read
    from them; an unreadable one is a grey square); ``identities`` N names or
    None (then the identity column holds the image's folder name).
    ``FfemError`` when ``directory`` exists and is not a projector folder.
    """
    directory = Path(directory)
    if directory.exists() and not (directory / "projector_config.pbtxt").is_file():
        raise FfemError(
            f"{directory}: exists and is not a projector folder written by ffem map; choose another --projector"
        )
    count = len(paths)
    columns = math.ceil(math.sqrt(count))
    side = max(1, min(MAX_THUMBNAIL, SPRITE_LIMIT // columns))
    sprite = Image.new("RGB", (columns * side, math.ceil(count / columns) * side), (0, 0, 0))
    for index, path in enumerate(paths):
        thumbnail, _ = _thumbnail(path, side)
        sprite.paste(thumbnail, ((index % columns) * side, (index // columns) * side))
    names = identities if identities is not None else [Path(p).parent.name for p in paths]
    with atomic.atomic_directory(directory) as staged:
        rows = ("\t".join(f"{value:.7g}" for value in vector) for vector in np.asarray(vectors))
        (staged / "embeddings.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        metadata = ["identity\tpath"] + [f"{_tsv_field(i)}\t{_tsv_field(p)}" for i, p in zip(names, paths, strict=True)]
        (staged / "metadata.tsv").write_text("\n".join(metadata) + "\n", encoding="utf-8")
        sprite.save(staged / "sprite.png", format="PNG")
        (staged / "projector_config.pbtxt").write_text(CONFIG.format(name=name, side=side), encoding="utf-8")
    return side
