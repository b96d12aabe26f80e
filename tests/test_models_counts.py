"""Parameter and MAC counts against the published figures and against
independent closed-form counts of each architecture."""

from __future__ import annotations

import keras
import pytest
from keras import layers

from ffem_cli.models import build_embedder, count_flops, count_macs, count_parameters
from ffem_cli.models.iresnet import IRESNET_DEPTHS

IRESNET_WIDTHS = (64, 128, 256, 512)


def iresnet_parameters(depths, embedding_size=512, map_side=7):
    """arcface_torch IResNet parameters, written out from its layer list."""
    total = 3 * 3 * 3 * 64 + 2 * 64 + 64  # stem conv, BN (γ, β), PReLU
    in_channels = 64
    for channels, blocks in zip(IRESNET_WIDTHS, depths, strict=True):
        for block in range(blocks):
            total += 2 * in_channels + 9 * in_channels * channels  # bn1, conv1
            total += 2 * channels + channels + 9 * channels * channels + 2 * channels
            if block == 0:  # stride 2: conv1x1 + BN shortcut
                total += in_channels * channels + 2 * channels
            in_channels = channels
    fc = 512 * map_side * map_side * embedding_size + embedding_size
    return total + 2 * 512 + fc + embedding_size  # bn2, fc, features BN (β only)


@pytest.fixture(scope="module")
def iresnets():
    return {name: build_embedder(name, "flatten-fc", 512) for name in IRESNET_DEPTHS}


@pytest.mark.parametrize("name", sorted(IRESNET_DEPTHS))
def test_iresnet_parameters_match_the_architecture(iresnets, name):
    assert count_parameters(iresnets[name]) == iresnet_parameters(IRESNET_DEPTHS[name])


@pytest.mark.parametrize(
    ("name", "parameters", "gmacs"),
    [("iresnet50", 43.6e6, 6.3), ("iresnet100", 65.2e6, 12.1)],
)
def test_iresnet_matches_arcface_torch_published_figures(iresnets, name, parameters, gmacs):
    assert count_parameters(iresnets[name]) == pytest.approx(parameters, rel=0.01)
    assert count_macs(iresnets[name]) / 1e9 == pytest.approx(gmacs, rel=0.02)


def test_mobilefacenet_matches_the_paper():
    # Chen et al. 2018, Table 2: 0.99M parameters, 221M MAdds (128-d embedding).
    paper = build_embedder("mobilefacenet", "gdc", 128)
    assert count_parameters(paper) == pytest.approx(0.99e6, rel=0.02)
    assert count_macs(paper) == pytest.approx(221e6, rel=0.02)
    default = build_embedder("mobilefacenet", "gdc", 512)
    # Only the head's FC (512 → D, no bias) and the last BN (γ, β) grow with D.
    assert count_parameters(default) - count_parameters(paper) == (512 + 2) * (512 - 128)
    assert count_macs(default) - count_macs(paper) == 512 * (512 - 128)


def test_thin_resnet34_is_the_half_width_resnet34():
    model = build_embedder("thin-resnet34", "gap", 512)
    total = 27 * 32 + 2 * 32
    in_channels = 32
    for channels, blocks in zip((32, 64, 128, 256), (3, 4, 6, 3), strict=True):
        for block in range(blocks):
            total += 9 * in_channels * channels + 2 * channels + 9 * channels**2 + 2 * channels
            if block == 0:
                total += in_channels * channels + 2 * channels
            in_channels = channels
    total += 256 * 512 + 2 * 512  # gap head: FC (no bias) + BN
    assert count_parameters(model) == total
    assert 4.5e6 < total < 6e6  # the EE488B seed's "~5M param"


def test_counter_on_a_hand_computed_model():
    inputs = keras.Input((10, 10, 8))
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)  # 10·10·16·(3·3·8)
    x = layers.BatchNormalization()(x)  # 32 parameters + 32 moving statistics
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 5·5·16·9; 16 bias
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(4)(x)  # 16·4; 4 bias
    model = keras.Model(inputs, outputs)
    macs = 10 * 10 * 16 * 72 + 5 * 5 * 16 * 9 + 16 * 4
    assert count_macs(model) == macs
    assert count_flops(model) == 2 * macs
    assert count_parameters(model) == 16 * 72 + 32 + 16 * 9 + 16 + 16 * 4 + 4
    assert model.count_params() == count_parameters(model) + 32


def test_counter_descends_into_nested_keras_applications_models():
    model = build_embedder("mobilenetv3-small", "gap", 128)
    nested = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert count_macs(nested) > 0.9 * count_macs(model)
    assert count_macs(model) == pytest.approx(15.6e6, rel=0.05)  # ≈ ¼ of 56M MAdds at 224
