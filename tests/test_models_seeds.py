"""The seeds' backbones against their published parameter counts; the backbone marker,
the head's L2 regulariser, local weights files, backbone-only transfer and freezing."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from ffem_cli.errors import FfemError
from ffem_cli.models import build_embedder, count_parameters
from ffem_cli.models.embedder import backbone_of
from ffem_cli.train import transfer


def imagenet_top(channels: int, classes: int = 1000) -> int:
    """keras.applications' include_top head: GAP → Dense(classes)."""
    return channels * classes + classes


@pytest.mark.parametrize(
    ("name", "published", "channels"),
    [  # keras.applications' table (weights incl. BN moving statistics), with the ImageNet top
        ("mobilenetv2", 3_538_984, 1280),
        ("resnet50v2", 25_613_800, 2048),
        ("efficientnetb3", 12_320_535, 1536),
    ],
)
def test_keras_application_backbones_match_the_published_counts(name, published, channels):
    backbone = backbone_of(build_embedder(name, None, 128, 96))
    assert backbone.output.shape[-1] == channels
    assert backbone.count_params() + imagenet_top(channels) == published


def test_mobilenetv3_minimalistic_is_relu6_without_se_at_3_9m():
    backbone = backbone_of(build_embedder("mobilenetv3-minimalistic", None, 128, 96))
    layers = backbone.get_layer("mobilenetv3_minimalistic").layers
    kinds = {type(layer).__name__ for layer in layers}
    assert "Multiply" not in kinds and "Activation" not in kinds  # no SE gates, no hard-swish
    relus = [layer for layer in layers if isinstance(layer, keras.layers.ReLU)]
    assert relus and all(layer.get_config()["max_value"] == 6.0 for layer in relus)
    assert {layer.kernel_size for layer in layers if isinstance(layer, keras.layers.DepthwiseConv2D)} == {(3, 3)}
    # MobileNetV3 top: 1×1 conv 960 → 1280 (bias), then the 1000-way 1×1 conv
    top = 960 * 1280 + 1280 + imagenet_top(1280)
    assert backbone.count_params() + top == pytest.approx(3.9e6, rel=0.02)  # Howard et al. 2019


def test_resnet18_is_torchvisions():
    backbone = backbone_of(build_embedder("resnet18", None, 128, 112))
    assert backbone.output.shape[1:] == (4, 4, 512)
    assert count_parameters(backbone) + imagenet_top(512) == 11_689_512  # torchvision resnet18


def test_thin_resnet34_se_is_the_ee488b_network():
    backbone = backbone_of(build_embedder("thin-resnet34-se", None, 512, 112))
    total = 7 * 7 * 3 * 48 + 2 * 48
    in_channels = 48
    for stage, (channels, blocks) in enumerate(zip((48, 96, 128, 256), (2, 3, 3, 3), strict=True)):
        for block in range(blocks):
            squeeze = channels // 8
            total += 9 * in_channels * channels + 2 * channels + 9 * channels**2 + 2 * channels
            total += channels * squeeze + squeeze + squeeze * channels + channels  # SE with biases
            if block == 0 and stage > 0:
                total += in_channels * channels + 2 * channels
            in_channels = channels
    assert count_parameters(backbone) == total
    assert backbone.output.shape[1:] == (4, 4, 256)


def test_head_l2_regularises_the_embedding_fc_only():
    plain = build_embedder("tiny", "gap", 16, 32)
    assert plain.losses == []
    model = build_embedder("tiny", "gap", 16, 32, head_l2=5e-4)
    fc = model.get_layer("gap_fc")
    expected = 5e-4 * float(np.sum(np.square(fc.kernel.numpy())))
    model(np.zeros((1, 32, 32, 3), "float32"))
    assert [float(v) for v in model.losses] == pytest.approx([expected], rel=1e-5)


def test_backbone_only_copy_keeps_the_new_head(tmp_path):
    source = build_embedder("tiny", "gap", 16, 32)
    target = build_embedder("tiny", "gnap", 24, 32)
    head_before = [w.numpy().copy() for w in target.get_layer("gnap_embedding_bn").weights]
    transfer.copy_backbone(source, target)
    for theirs, ours in zip(backbone_of(source).weights, backbone_of(target).weights, strict=True):
        np.testing.assert_array_equal(theirs.numpy(), ours.numpy())
    for before, after in zip(head_before, target.get_layer("gnap_embedding_bn").weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    with pytest.raises(FfemError, match="is not this run's backbone"):
        transfer.copy_backbone(build_embedder("mobilefacenet", "gdc", 16, 96), build_embedder("tiny", "gap", 16, 96))


def test_weights_from_a_local_keras_applications_h5(tmp_path):
    """A no-top .h5 as keras.applications writes it (layer-name groups, legacy format)."""
    from keras.src.legacy.saving import legacy_h5_format

    donor = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=None)
    path = tmp_path / "mobilenet_v2_no_top.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, donor)
    embedder = build_embedder("mobilenetv2", "gdc", 16, 96)
    transfer.load_backbone_weights(embedder, path)
    nested = embedder.get_layer("mobilenetv2")
    for theirs, ours in zip(donor.weights, nested.weights, strict=True):
        np.testing.assert_array_equal(theirs.numpy(), ours.numpy())
    with pytest.raises(FfemError, match=r"does not fit the 'resnet50v2' backbone"):
        transfer.load_backbone_weights(build_embedder("resnet50v2", "gap", 16, 96), path)
    with pytest.raises(FfemError, match="no such weights file .ffem never downloads"):
        transfer.load_backbone_weights(embedder, tmp_path / "imagenet.h5")


def test_weights_from_a_keras_embedder_file(tmp_path):
    source = build_embedder("tiny", "gap", 16, 32)
    source.save(tmp_path / "e.keras")
    target = build_embedder("tiny", "gdc", 8, 32)
    transfer.load_backbone_weights(target, tmp_path / "e.keras")
    for theirs, ours in zip(backbone_of(source).weights, backbone_of(target).weights, strict=True):
        np.testing.assert_array_equal(theirs.numpy(), ours.numpy())


def test_freezing_the_backbone_leaves_the_head_trainable():
    model = build_embedder("tiny", "gap", 16, 32)
    backbone = {id(w) for w in backbone_of(model).trainable_weights}
    transfer.set_backbone_trainable(model, False)
    trainable = model.trainable_weights
    assert trainable and not any(id(w) in backbone for w in trainable)
    assert {w.path for w in trainable} >= {model.get_layer("gap_fc").kernel.path}
    transfer.set_backbone_trainable(model, True)
    assert backbone <= {id(w) for w in model.trainable_weights}
