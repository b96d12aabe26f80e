"""The seeds' augmentation options, each settable: crop scale, hue, greyscale, colour
jitter, cutout (``data.pipeline.Augment.preset``)."""

from __future__ import annotations

import numpy as np
import pytest

from ffem_cli.data.pipeline import Augment, train_dataset
from ffem_cli.errors import FfemError
from tests.train_fixtures import make_pack


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    return make_pack(tmp_path_factory.mktemp("augment_pack"), identities=4, images_per_identity=4)


def first_batch(pack_dir, augment):
    images, _ = next(iter(train_dataset(pack_dir, 8, epoch=0, seed=5, augment=augment)))
    return images.numpy()


def test_presets_take_single_options_and_refuse_bad_ones():
    assert Augment.preset("flip", {"hue": 0.1}) == Augment(hue=0.1)
    assert Augment.preset("strong", {"scale": [0.8, 1.0]}).scale == (0.8, 1.0)
    assert Augment.preset("off", {}) == Augment.off()
    for options, message in [
        ({"hew": 0.1}, r"unknown augment option 'hew'"),
        ({"scale": [1.0, 0.8]}, r"scale must be \[low, high\]"),
        ({"greyscale": 1.5}, r"greyscale must be at most 1"),
        ({"contrast": -0.1}, r"contrast must be a non-negative number"),
        ({"flip": 1}, r"flip must be true or false"),
    ]:
        with pytest.raises(FfemError, match=message):
            Augment.preset("flip", options)
    with pytest.raises(FfemError, match="unknown augment 'wild'"):
        Augment.preset("wild")


def test_greyscale_always_gives_equal_channels(pack_dir):
    images = first_batch(pack_dir, Augment.preset("off", {"greyscale": 1.0}))
    np.testing.assert_allclose(images[..., 0], images[..., 1], atol=1.0)
    np.testing.assert_allclose(images[..., 1], images[..., 2], atol=1.0)
    plain = first_batch(pack_dir, Augment.off())
    assert np.abs(plain[..., 0] - plain[..., 2]).max() > 20  # the synthetic faces are coloured


def test_cutout_blanks_one_square_of_the_given_side(pack_dir):
    images = first_batch(pack_dir, Augment.preset("off", {"cutout": 1.0, "cutout_size": 0.25}))
    plain = first_batch(pack_dir, Augment.off())
    for cut, original in zip(images, plain, strict=True):
        blank = np.all(cut == 0, axis=-1) & ~np.all(original == 0, axis=-1)
        rows, columns = np.nonzero(blank)
        assert 0 < blank.sum() <= 16 * 16
        assert rows.max() - rows.min() < 16 and columns.max() - columns.min() < 16
        np.testing.assert_array_equal(cut[~blank], original[~blank])


def test_hue_turns_colours_and_is_repeatable(pack_dir):
    augment = Augment.preset("off", {"hue": 0.5})
    first, again = first_batch(pack_dir, augment), first_batch(pack_dir, augment)
    np.testing.assert_array_equal(first, again)  # a function of (seed, epoch, position)
    plain = first_batch(pack_dir, Augment.off())
    assert np.abs(first - plain).mean() > 5
    grey = lambda x: x @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    assert np.abs(grey(first) - grey(plain)).mean() < np.abs(first - plain).mean()


def test_new_options_leave_the_crop_and_jitter_draws_alone(pack_dir):
    strong = first_batch(pack_dir, Augment.strong())
    with_cutout = first_batch(pack_dir, Augment.preset("strong", {"cutout": 1.0, "cutout_size": 0.1}))
    untouched = ~np.all(with_cutout == 0, axis=-1)
    np.testing.assert_array_equal(strong[untouched], with_cutout[untouched])
