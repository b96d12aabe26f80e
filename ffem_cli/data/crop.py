"""Cutting a face out of a photo: the one face-preparation function.

``crop_face`` is used by ``ffem pack`` (training data), eval, embed and
export, so that every model sees faces prepared exactly as in training.

Coordinates follow the ``image_list.json`` convention: ``box = (x1, y1, x2, y2)``
in pixels, left/top inclusive and right/bottom exclusive, so the box covers
the continuous region ``[x1, x2) x [y1, y2)`` and pixel ``(i, j)`` covers
``[i, i+1) x [j, j+1)``. Landmarks are ``(x, y)`` pixel positions in the
MTCNN / OpenCV convention (the centre of pixel ``i`` is at ``i``).

Two modes:

* **margin** (default): a square centred on the box centre with side
  ``max(w, h) * (1 + 2 * margin)``; the parts of the square outside the photo
  are filled with black (zeros, like the border of the aligned mode), then the
  square is resized to ``size x size`` with antialiased bilinear filtering.
* **align**: the similarity transform (rotation, uniform scale, translation)
  that best maps the five landmarks onto the standard ArcFace 112x112
  template in the least-squares sense (Umeyama, 1991) is applied with
  bilinear sampling; outside the photo is black. For ``size != 112`` the
  template is scaled by ``size / 112``.

With ``box=None`` (and ``align=False``) the whole photo is taken as the face
and resized to ``size x size`` (for already-cropped faces).

A third mode, **stretch** (``stretch=True``), reproduces the seed FFEM
project's evaluation crop: the box itself, no margin, no squaring, resized to
``size x size`` (so the aspect ratio is not kept); outside the photo is black.
``seed_box_from_landmarks`` is the box that project derived from five
landmarks.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# Left eye, right eye, nose tip, left and right mouth corner on a 112x112 crop
# (InsightFace / ArcFace, Deng et al., CVPR 2019), pixel-centre coordinates.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
MAX_COORDINATE = 1e6  # pixels; farther landmarks are a broken list, not a photo
MAX_PADDED_FACTOR = 16  # a margin/stretch region padded beyond 16x the photo's pixels is pasted, not padded


def crop_face(
    image: np.ndarray,
    box: tuple[float, float, float, float] | None,
    landmarks: np.ndarray | None = None,
    size: int = 112,
    margin: float = 0.2,
    align: bool = False,
    stretch: bool = False,
) -> np.ndarray:
    """Cut the face out of ``image`` and return it as a ``(size, size, 3)`` uint8 array.

    ``image``: RGB uint8 ``(H, W, 3)``. ``box``: ``(x1, y1, x2, y2)`` pixels or
    ``None`` for the whole image. ``landmarks``: ``(5, 2)`` float ``(x, y)``
    pixels, required when ``align`` is true. ``margin``: fraction of the box's
    longer side added on every side (margin mode only). ``stretch``: the box
    alone, resized to a square (see the module docstring). Raises ``ValueError``
    on an empty box or missing landmarks (callers validate user input first
    and turn problems into ``FfemError`` naming the entry).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    face = crop_face_image(Image.fromarray(image), box, landmarks, size, margin, align, stretch)
    return np.asarray(face)


def crop_face_image(
    picture: Image.Image,
    box: tuple[float, float, float, float] | None,
    landmarks: np.ndarray | None = None,
    size: int = 112,
    margin: float = 0.2,
    align: bool = False,
    stretch: bool = False,
) -> Image.Image:
    """``crop_face`` on an RGB PIL image, returning a PIL image (saves two array copies).

    ``ffem pack`` uses it on freshly decoded photos; everything else should
    call ``crop_face``. Same geometry, same pixels.
    """
    if picture.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {picture.mode}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if align:
        if landmarks is None:
            raise ValueError("align=True needs the 5 landmarks")
        return _align(picture, np.asarray(landmarks, dtype=np.float64), size)
    if box is None:
        return picture.resize((size, size), Image.BILINEAR)
    if stretch:
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"empty box {box}")
        return _resize_region(picture, (x1, y1, x2, y2), size)
    return _resize_region(picture, square_around_box(box, margin), size)


def square_around_box(box: tuple[float, float, float, float], margin: float) -> tuple[float, float, float, float]:
    """The margin-mode square ``(left, top, right, bottom)`` in continuous pixel coordinates."""
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = x2 - x1, y2 - y1
    if width <= 0 or height <= 0:
        raise ValueError(f"empty box {box}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    half = max(width, height) * (1 + 2 * margin) / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx - half, cy - half, cx + half, cy + half


def _resize_region(picture: Image.Image, region: tuple[float, float, float, float], size: int) -> Image.Image:
    """The continuous ``region`` (left, top, right, bottom) resized to ``size x size``; black outside the photo.

    A region whose padded canvas would exceed ``MAX_PADDED_FACTOR`` times the
    photo's pixels (a broken box such as ``x1 = -10**9``) is not padded in
    memory: the photo is resized to where it falls in the output and pasted on
    black, which bounds memory by the photo and the output.
    """
    left, top, right, bottom = region
    width, height = picture.size
    canvas = (math.ceil(right) - math.floor(left)) * (math.ceil(bottom) - math.floor(top))
    if canvas > MAX_PADDED_FACTOR * width * height:
        return _paste_region(picture, region, size)
    if left < 0 or top < 0 or right > width or bottom > height:
        # Cut the integer bounding rectangle first: PIL fills the outside with black.
        x0, y0 = math.floor(left), math.floor(top)
        picture = picture.crop((x0, y0, math.ceil(right), math.ceil(bottom)))
        left, top, right, bottom = left - x0, top - y0, right - x0, bottom - y0
    # Resize the fractional square with an antialiasing bilinear filter.
    return picture.resize((size, size), Image.BILINEAR, box=(left, top, right, bottom))


def _paste_region(picture: Image.Image, region: tuple[float, float, float, float], size: int) -> Image.Image:
    """``_resize_region`` for a region far larger than the photo: the visible part resized and pasted on black."""
    left, top, right, bottom = region
    width, height = picture.size
    scale_x, scale_y = size / (right - left), size / (bottom - top)
    inside = (max(left, 0.0), max(top, 0.0), min(right, float(width)), min(bottom, float(height)))
    out_left, out_top = round((inside[0] - left) * scale_x), round((inside[1] - top) * scale_y)
    out_right, out_bottom = round((inside[2] - left) * scale_x), round((inside[3] - top) * scale_y)
    face = Image.new("RGB", (size, size))
    if inside[2] > inside[0] and inside[3] > inside[1] and out_right > out_left and out_bottom > out_top:
        face.paste(
            picture.resize((out_right - out_left, out_bottom - out_top), Image.BILINEAR, box=inside),
            (out_left, out_top),
        )
    return face


def seed_box_from_landmarks(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """The seed FFEM project's box for five landmarks (its ``generate_bbox`` ``rect_from_landmark``).

    ``landmarks``: ``(5, 2)`` ``(x, y)`` in the order left eye, right eye,
    nose, left and right mouth corner. The landmarks' extent grows by 1/1.5 of
    its width (height) on each side, i.e. to ``(1 + 2/1.5)`` times its size,
    and shifts sideways with the yaw: by ``±1.2 (1 - shorter/longer)`` widths,
    from the two eye-to-nose distances, towards the nearer eye. Coordinates
    are truncated to integers as the seed did.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    min_x, min_y = points[:, 0].min(), points[:, 1].min()
    max_x, max_y = points[:, 0].max(), points[:, 1].max()
    width, height = (max_x - min_x) / 1.5, (max_y - min_y) / 1.5
    left_line = float(np.linalg.norm(points[0] - points[2]))
    right_line = float(np.linalg.norm(points[1] - points[2]))
    if max(left_line, right_line) == 0:
        shift = 0.0
    elif left_line - right_line > 0:
        shift = -(1 - right_line / left_line) * 1.2
    else:
        shift = (1 - left_line / right_line) * 1.2
    box = np.array([min_x - width + width * shift, min_y - height, max_x + width + width * shift, max_y + height])
    return tuple(int(v) for v in box.astype(np.int32))


def umeyama(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``source`` points onto ``target``.

    ``source``, ``target``: ``(N, 2)`` point sets. Returns the ``(2, 3)`` matrix
    ``[s*R | t]`` with ``target ≈ s*R @ source + t`` (R a proper rotation).
    Umeyama, "Least-squares estimation of transformation parameters between
    two point patterns", IEEE TPAMI 13(4), 1991.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = source.mean(axis=0), target.mean(axis=0)
    src_c, dst_c = source - src_mean, target - dst_mean
    covariance = dst_c.T @ src_c / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    src_var = (src_c**2).sum() / len(source)
    scale = float((singular * sign).sum() / src_var) if src_var > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def landmark_problem(landmarks: np.ndarray) -> str | None:
    """Why five landmarks cannot be aligned, or ``None``.

    They must be a finite ``(5, 2)`` array within ``±MAX_COORDINATE`` pixels,
    not all within one pixel of each other (no scale to estimate).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2) or not np.all(np.isfinite(landmarks)):
        return f"expected 5 finite (x, y) landmarks, got shape {landmarks.shape}"
    if np.abs(landmarks).max() > MAX_COORDINATE:
        return f"landmark coordinates beyond ±{MAX_COORDINATE:g} pixels"
    if np.ptp(landmarks, axis=0).max() < 1.0:
        return "degenerate landmarks (all five points within one pixel)"
    return None


def alignment_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The ``(2, 3)`` similarity transform from photo landmarks to the template for ``size``."""
    problem = landmark_problem(landmarks)
    if problem:
        raise ValueError(problem)
    return umeyama(np.asarray(landmarks, dtype=np.float64), ARCFACE_TEMPLATE * (size / 112.0))


def _align(picture: Image.Image, landmarks: np.ndarray, size: int) -> Image.Image:
    matrix = alignment_matrix(landmarks, size)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale <= 0:
        raise ValueError("degenerate landmarks (all points coincide)")
    # Bilinear sampling aliases when shrinking a lot: first reduce the photo by
    # an integer factor (box filter) so that the remaining scale is >= 0.5.
    factor = int(1 / scale) if scale < 0.5 else 1
    if factor > 1:
        picture = picture.reduce(factor)
        # Pixel-centre coordinates: continuous x_c = x + 0.5 shrinks by factor.
        landmarks = (landmarks + 0.5) / factor - 0.5
        matrix = alignment_matrix(landmarks, size)
    # PIL wants the inverse map (output -> input) in continuous coordinates,
    # where a pixel centre sits at i + 0.5; the matrix is in pixel-centre ones.
    linear_inv = np.linalg.inv(matrix[:, :2])
    offset_inv = -linear_inv @ matrix[:, 2]
    offset_pil = offset_inv - linear_inv @ np.array([0.5, 0.5]) + 0.5
    coefficients = (
        linear_inv[0, 0], linear_inv[0, 1], offset_pil[0],
        linear_inv[1, 0], linear_inv[1, 1], offset_pil[1],
    )  # fmt: skip
    return picture.transform((size, size), Image.AFFINE, coefficients, resample=Image.BILINEAR, fillcolor=(0, 0, 0))
