"""Pictures of faces: the search strip (query + matches) and the 2-D face map, drawn with Pillow.

Both are written atomically as PNG. Thumbnails are read from the gallery's
paths; an unreadable image is drawn as a grey square (the picture is still
complete and the count is returned). ``gallery_map`` is ``ffem map``'s PNG:
a gallery laid out by ``gallery.project_2d``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ffem_cli import atomic
from ffem_cli.images import ImageReadError, read_rgb


def _thumbnail(path: str | Path, side: int) -> tuple[Image.Image, bool]:
    try:
        image = Image.fromarray(read_rgb(path))
    except ImageReadError:
        return Image.new("RGB", (side, side), (128, 128, 128)), False
    return ImageOps.fit(image, (side, side), Image.BILINEAR), True


def identity_colours(identities: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """A distinct, saturated colour per identity (golden-ratio hue steps)."""
    colours = {}
    for i, name in enumerate(sorted(set(identities))):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 0.9)
        colours[name] = (int(r * 255), int(g * 255), int(b * 255))
    return colours


def _save(image: Image.Image, output: Path) -> None:
    with atomic.atomic_open(output, "wb") as handle:
        image.save(handle, format="PNG")


def search_strip(query: Path, matches: list[dict], output: Path, side: int = 160) -> None:
    """One row: the query, then each match with its rank, score and identity underneath."""
    caption = 34
    gap = 8
    count = 1 + len(matches)
    strip = Image.new("RGB", (count * side + (count + 1) * gap, side + caption + 2 * gap), "white")
    draw = ImageDraw.Draw(strip)
    entries = [(query, "query", "")] + [(m["path"], f"#{m['rank']}  {m['score']:.3f}", m["identity"]) for m in matches]
    for i, (path, line1, line2) in enumerate(entries):
        x = gap + i * (side + gap)
        thumb, _ = _thumbnail(path, side)
        strip.paste(thumb, (x, gap))
        if i == 0:
            draw.rectangle([x - 3, gap - 3, x + side + 2, gap + side + 2], outline=(0, 0, 0), width=3)
        draw.text((x + 2, gap + side + 3), line1, fill=(0, 0, 0))
        draw.text((x + 2, gap + side + 17), line2[:26], fill=(80, 80, 80))
    _save(strip, output)


def face_map(
    coords: np.ndarray,
    paths: Sequence[str],
    identities: Sequence[str] | None,
    output: Path,
    size: int = 1600,
    max_thumbnails: int = 2000,
    title: str = "",
) -> int:
    """Draw ``paths`` at ``coords`` (N, 2) on a ``size x size`` canvas; return how many thumbnails were drawn.

    Each face is a thumbnail framed in its identity's colour (grey without
    identities). With more than ``max_thumbnails`` faces, an even sample is
    drawn as thumbnails and the rest as coloured dots.
    """
    canvas = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(canvas)
    n = len(paths)
    side = int(np.clip(size / (2.2 * np.sqrt(max(n, 1))), 16, 96))
    border = max(2, side // 16)
    pad = side // 2 + border + 24
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    xy = pad + (coords - low) / span * (size - 2 * pad)
    colours = identity_colours(identities) if identities is not None else {}
    shown = set(np.linspace(0, n - 1, min(n, max_thumbnails)).round().astype(int).tolist()) if n else set()
    for i in range(n):
        colour = colours.get(identities[i], (120, 120, 120)) if identities is not None else (120, 120, 120)
        x, y = int(xy[i, 0]), int(xy[i, 1])
        if i not in shown:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            continue
        thumb, _ = _thumbnail(paths[i], side)
        left, top = x - side // 2, y - side // 2
        draw.rectangle([left - border, top - border, left + side + border - 1, top + side + border - 1], fill=colour)
        canvas.paste(thumb, (left, top))
    if title:
        draw.text((10, 6), title, fill=(0, 0, 0))
    _save(canvas, output)
    return len(shown)


def gallery_map(
    faces, name: str, output: Path, method: str = "pca", size: int = 1600, max_thumbnails: int = 2000
) -> int:
    """``face_map`` of a read ``gallery.Gallery`` laid out by ``project_2d`` (``method``: pca or tsne,
    any case), titled with ``name``; returns how many thumbnails were drawn."""
    from ffem_cli.inference.gallery import project_2d

    coords = project_2d(faces.vectors, method.lower())
    title = f"{name}: {len(faces.paths)} faces, {method.upper()}"
    return face_map(coords, faces.paths, faces.identities, output, size, max_thumbnails, title)
