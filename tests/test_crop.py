"""`crop_face`: margin-square geometry, border fill, 5-point alignment onto the ArcFace template."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ffem_cli.data import crop as crop_module
from ffem_cli.data.crop import ARCFACE_TEMPLATE, alignment_matrix, crop_face, umeyama


def square_image(height=200, width=240, box=(60, 50, 100, 90)) -> np.ndarray:
    """Black image with a white rectangle covering ``box`` (x1, y1, x2, y2; right/bottom exclusive)."""
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def white_extent(crop: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the pixels brighter than mid-grey in a crop."""
    ys, xs = np.nonzero(crop[..., 0] > 127)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("size, expected", [(60, (10, 10, 50, 50)), (120, (20, 20, 100, 100))])
def test_margin_square_is_centred_with_the_requested_margin(size, expected):
    # 40x40 box, margin 0.25: a 60x60 square centred on the box; the box fills the middle 2/3.
    crop = crop_face(square_image(), (60, 50, 100, 90), size=size, margin=0.25)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert white_extent(crop) == expected


def test_margin_square_uses_the_longer_box_side():
    # 40 wide x 80 tall box, margin 0: an 80x80 square; the box spans the full height, half the width.
    crop = crop_face(square_image(box=(60, 50, 100, 130)), (60, 50, 100, 130), size=80, margin=0.0)
    assert white_extent(crop) == (20, 0, 60, 80)


def test_box_touching_the_border_is_filled_with_black_outside_the_image():
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(image, (0, 0, 40, 40), size=60, margin=0.25)  # square spans -10 .. 50
    assert crop[:10].max() == 0 and crop[:, :10].max() == 0
    assert crop[10:, 10:].min() == 200


@pytest.mark.parametrize("stretch", [False, True])
def test_a_box_far_larger_than_the_photo_is_pasted_not_padded(monkeypatch, stretch):
    """A broken box such as x1 = -10**9 gives a black face in bounded memory (it once raised MemoryError),
    and just past the paste threshold the pasted face matches the padded one."""
    image = np.full((100, 100, 3), 200, np.uint8)
    far = crop_face(image, (-(10**9), 0, 100, 100), size=64, margin=0.2, stretch=stretch)
    assert far.shape == (64, 64, 3) and far.max() <= 200 and far.mean() < 1
    box = (-1900, -1900, 100, 100)  # a 2000-pixel square: 400 photo areas, pasted
    pasted = crop_face(image, box, size=100, margin=0.0, stretch=stretch).astype(int)
    monkeypatch.setattr(crop_module, "MAX_PADDED_FACTOR", 10**9)
    padded = crop_face(image, box, size=100, margin=0.0, stretch=stretch).astype(int)
    assert pasted[95:, 95:].min() == 200 and pasted[:94].max() == 0 and pasted[:, :94].max() == 0
    differ = np.abs(pasted - padded).max(axis=2) > 0  # only the antialiased edge of the photo differs
    assert differ.any() and not differ[:93].any() and not differ[:, :93].any() and not differ[97:, 97:].any()


def test_box_none_resizes_the_whole_image():
    image = np.zeros((50, 80, 3), np.uint8)
    image[:, :40] = 255
    crop = crop_face(image, None, size=32)
    assert crop.shape == (32, 32, 3)
    assert crop[:, :15].min() == 255 and crop[:, 17:].max() == 0


def test_empty_box_and_missing_landmarks_are_refused():
    with pytest.raises(ValueError, match="empty box"):
        crop_face(square_image(), (50, 50, 50, 80))
    with pytest.raises(ValueError, match="landmarks"):
        crop_face(square_image(), (0, 0, 10, 10), None, align=True)


def test_umeyama_recovers_a_known_similarity_transform():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    target = source @ (scale * rotation).T + shift
    matrix = umeyama(source, target)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def dots_image(points: np.ndarray, height=300, width=400, sigma=3.0) -> np.ndarray:
    """Gaussian bright dots at ``points`` (pixel-centre coordinates) in the red channel."""
    ys, xs = np.mgrid[0:height, 0:width]
    red = np.zeros((height, width))
    for x, y in points:
        red = np.maximum(red, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)))
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.round(red * 255).astype(np.uint8)
    return image


def dot_centres(crop: np.ndarray, near: np.ndarray, radius: float) -> np.ndarray:
    """Intensity-weighted centroid of the red channel within ``radius`` of each point in ``near``."""
    red = crop[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
    centres = []
    for x, y in near:
        weight = red * (((xs - x) ** 2 + (ys - y) ** 2) < radius**2)
        centres.append([(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()])
    return np.array(centres)


@pytest.mark.parametrize("size", [112, 224])
@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (0.3, 1.4), (-0.2, 3.0)])
def test_alignment_puts_the_landmarks_on_the_template(size, angle, scale):
    # Photo landmarks: the template rotated, scaled and moved (scale 3 exercises the pre-reduction).
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    landmarks = (ARCFACE_TEMPLATE - 56) @ (scale * rotation).T + [200, 150]
    crop = crop_face(dots_image(landmarks, sigma=2.0 * scale), None, landmarks, size=size, align=True)
    template = ARCFACE_TEMPLATE * size / 112
    found = dot_centres(crop, template, radius=6 * size / 112)
    assert np.abs(found - template).max() < 1.0


def test_alignment_of_irregular_landmarks_matches_the_least_squares_transform():
    landmarks = np.array([[150.3, 120.2], [210.7, 130.1], [180.0, 160.0], [155.0, 200.0], [205.0, 205.0]])
    crop = crop_face(dots_image(landmarks, sigma=4.0), None, landmarks, size=112, align=True)
    matrix = alignment_matrix(landmarks, 112)
    expected = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(dot_centres(crop, expected, radius=6) - expected).max() < 1.0
    # The least-squares fit lands every landmark within a few pixels of its template point.
    assert np.abs(expected - ARCFACE_TEMPLATE).max() < 5.0


def test_face_prep_of_an_aligned_run_aligns_with_landmarks_and_cuts_the_box_without():
    from ffem_cli.inference.embedding import FacePrep

    image = square_image()
    box, landmarks = (60, 50, 100, 90), ARCFACE_TEMPLATE * (40 / 112) + (60, 50)
    prep = FacePrep.from_run({"image_size": 64, "crop": "align", "margin": 0.25})
    assert np.array_equal(prep.cut(image, box, landmarks), crop_face(image, box, landmarks, size=64, align=True))
    assert np.array_equal(prep.cut(image, box), crop_face(image, box, size=64, margin=0.25))
    assert np.array_equal(prep.cut(image), crop_face(image, None, size=64))
