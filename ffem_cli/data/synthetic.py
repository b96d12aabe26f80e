"""Synthetic face identities for demos and tests: drawn faces, not people.

Each identity is a fixed set of drawing parameters (face shape, skin and hair
colour, eye spacing, nose, mouth, a personal pattern of marks); each image of
it varies position, scale, rotation, lighting, background and noise. Because
the drawing is known, every image comes with its exact face box and the five
landmarks (eye centres, nose tip, mouth corners), written in ffem's
``image_list.json`` format. These are plainly cartoons: MTCNN is not expected
to find them, and accuracy on them says nothing about real faces.

Run ``python -m ffem_cli.data.synthetic OUT --identities 12 --images 8`` to
write ``OUT/<identity>/<n>.jpg`` and ``OUT/image_list.json``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ffem_cli import atomic


@dataclass(frozen=True)
class Identity:
    """Drawing parameters of one synthetic person (all lengths relative to face width)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    eye: tuple[int, int, int]
    aspect: float  # face height / width
    eye_gap: float
    eye_height: float
    eye_size: float
    nose_length: float
    mouth_width: float
    mouth_height: float
    brow_tilt: float  # radians
    hair_depth: float
    marks: tuple[tuple[float, float, float], ...]  # (x, y, radius) in face coordinates


def make_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity's parameters from ``rng``."""

    def colour(low: int, high: int) -> tuple[int, int, int]:
        return tuple(int(v) for v in rng.integers(low, high, size=3))

    return Identity(
        skin=colour(90, 245),
        hair=colour(0, 160),
        eye=colour(0, 200),
        aspect=float(rng.uniform(1.15, 1.45)),
        eye_gap=float(rng.uniform(0.30, 0.46)),
        eye_height=float(rng.uniform(0.36, 0.46)),
        eye_size=float(rng.uniform(0.07, 0.12)),
        nose_length=float(rng.uniform(0.12, 0.24)),
        mouth_width=float(rng.uniform(0.25, 0.50)),
        mouth_height=float(rng.uniform(0.74, 0.84)),
        brow_tilt=float(rng.uniform(-0.35, 0.35)),
        hair_depth=float(rng.uniform(0.12, 0.32)),
        marks=tuple(
            (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.45, 0.85)), float(rng.uniform(0.02, 0.05)))
            for _ in range(int(rng.integers(0, 4)))
        ),
    )


def render(identity: Identity, rng: np.random.Generator, canvas: int = 160) -> tuple[np.ndarray, dict]:
    """One image of ``identity``: ``(uint8 array (canvas, canvas, 3), entry)``.

    ``entry`` holds the integer box ``x1, y1, x2, y2`` (left, top, right,
    bottom, pixels, clipped to the image) and ``landmarks``: five ``[x, y]``
    pixel points (left eye, right eye, nose tip, left and right mouth corner).
    """
    supersample = 2
    size = canvas * supersample
    width = rng.uniform(0.42, 0.62) * size
    height = width * identity.aspect
    cx = size / 2 + rng.uniform(-0.12, 0.12) * size
    cy = size / 2 + rng.uniform(-0.08, 0.08) * size
    angle = rng.uniform(-0.25, 0.25)

    def to_image(fx: float, fy: float) -> tuple[float, float]:
        """Face coordinates (0..1 across the face box) to rotated pixel coordinates."""
        dx, dy = (fx - 0.5) * width, (fy - 0.5) * height
        return (cx + dx * math.cos(angle) - dy * math.sin(angle), cy + dx * math.sin(angle) + dy * math.cos(angle))

    background = tuple(int(v) for v in rng.integers(0, 256, size=3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)

    def polygon(points: list[tuple[float, float]], fill) -> None:
        draw.polygon([to_image(x, y) for x, y in points], fill=fill)

    def ellipse(fx: float, fy: float, rx: float, ry: float, fill, steps: int = 36) -> None:
        polygon([(fx + rx * math.cos(t), fy + ry * math.sin(t)) for t in np.linspace(0, 2 * math.pi, steps)], fill)

    ellipse(0.5, 0.5 - identity.hair_depth / 3, 0.56, 0.5 + identity.hair_depth / 2, identity.hair)
    ellipse(0.5, 0.5, 0.5, 0.5, identity.skin)
    eye_y = identity.eye_height
    left_eye, right_eye = (0.5 - identity.eye_gap / 2, eye_y), (0.5 + identity.eye_gap / 2, eye_y)
    for ex, ey in (left_eye, right_eye):
        ellipse(ex, ey, identity.eye_size * 1.4, identity.eye_size * 0.8, (250, 250, 250))
        ellipse(ex, ey, identity.eye_size * 0.6, identity.eye_size * 0.6, identity.eye)
        side = -1 if ex < 0.5 else 1
        tilt = identity.brow_tilt * side
        by = ey - identity.eye_size * 2.0
        polygon(
            [
                (ex - 0.09, by + tilt * 0.1),
                (ex + 0.09, by - tilt * 0.1),
                (ex + 0.09, by - tilt * 0.1 - 0.025),
                (ex - 0.09, by + tilt * 0.1 - 0.025),
            ],
            identity.hair,
        )
    nose = (0.5, eye_y + identity.nose_length)
    darker = tuple(int(c * 0.7) for c in identity.skin)
    polygon([(0.5, eye_y + 0.04), (nose[0] - 0.05, nose[1]), (nose[0] + 0.05, nose[1])], darker)
    mouth_left = (0.5 - identity.mouth_width / 2, identity.mouth_height)
    mouth_right = (0.5 + identity.mouth_width / 2, identity.mouth_height)
    polygon(
        [mouth_left, (0.5, identity.mouth_height + 0.05), mouth_right, (0.5, identity.mouth_height + 0.015)],
        (150, 40, 50),
    )
    for mx, my, mr in identity.marks:
        ellipse(mx, my, mr, mr, tuple(int(c * 0.45) for c in identity.skin), steps=12)

    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.5, 2.0))).resize(
        (canvas, canvas), Image.BILINEAR
    )
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels * rng.uniform(0.7, 1.2) + rng.uniform(-25, 25) + rng.normal(0, 6, size=pixels.shape)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)

    corners = np.array([to_image(x, y) for x, y in ((0, 0), (1, 0), (0, 1), (1, 1))]) / supersample
    x1, y1 = np.clip(np.floor(corners.min(axis=0)), 0, canvas - 1).astype(int)
    x2, y2 = np.clip(np.ceil(corners.max(axis=0)), 1, canvas).astype(int)
    landmarks = [
        [round(float(v) / supersample, 2) for v in to_image(*p)]
        for p in (left_eye, right_eye, nose, mouth_left, mouth_right)
    ]
    return pixels, {"x1": int(x1), "y1": int(y1), "x2": int(x2), "y2": int(y2), "landmarks": landmarks}


def write_dataset(
    output: str | Path, identities: int = 12, images_per_identity: int = 8, seed: int = 0, canvas: int = 160
) -> Path:
    """Write ``output/synthetic_<i>/<n>.jpg`` and ``output/image_list.json``; return the list's path.

    Labels follow the sorted identity names, as ``ffem detect`` assigns them.
    """
    output = Path(output)
    rng = np.random.default_rng(seed)
    people = [make_identity(rng) for _ in range(identities)]
    width = len(str(identities - 1))
    image_list = {}
    for label, person in enumerate(people):
        folder = output / f"synthetic_{label:0{width}d}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(images_per_identity):
            pixels, entry = render(person, rng, canvas)
            rel = f"{folder.name}/{n:03d}.jpg"
            with atomic.atomic_open(output / rel, "wb") as handle:
                Image.fromarray(pixels).save(handle, format="JPEG", quality=92)
            image_list[rel] = {"label": label, **entry, "score": 1.0}
    list_path = output / "image_list.json"
    atomic.write_json(list_path, image_list)
    return list_path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic face set (drawn identities, not people).")
    parser.add_argument("output", type=Path)
    parser.add_argument("--identities", type=int, default=12)
    parser.add_argument("--images", type=int, default=8, help="images per identity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--canvas", type=int, default=160, help="image side in pixels")
    args = parser.parse_args()
    path = write_dataset(args.output, args.identities, args.images, args.seed, args.canvas)
    print(f"wrote {args.identities} synthetic identities x {args.images} images and {path}")


if __name__ == "__main__":
    main()
