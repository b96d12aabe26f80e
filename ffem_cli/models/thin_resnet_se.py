"""``thin-resnet34-se``: ThinResNet34 exactly as the EE488B face trainer defines it
(``models/ThinResNet34.py``, voxceleb_trainer's ``ResNetSE`` with ``SEBasicBlock``).

Stem conv7×7(48, stride 2) → BN → ReLU → max-pool 3×3 stride 2, then
[2, 3, 3, 3] SE basic blocks at 48, 96, 128, 256 channels, stages 2-4
starting with stride 2 (conv1×1 + BN shortcut). An SE basic block is
conv3×3 → ReLU → BN → conv3×3 → BN → squeeze-excitation (GAP → FC(C/8) →
ReLU → FC(C) → sigmoid, a per-channel scale; with biases) → + shortcut →
ReLU — note the trainer's ReLU before the first BN. Total stride 32
(112 → 4). It differs from ffem's ``thin-resnet34`` (a half-width ResNet34,
[3, 4, 6, 3], no SE, stride-1 stem), so both are kept.
"""

from __future__ import annotations

from keras import layers

from ffem_cli.models.blocks import BN_EPSILON, conv_bn

THIN_RESNET34_SE_WIDTHS = (48, 96, 128, 256)
THIN_RESNET34_SE_DEPTHS = (2, 3, 3, 3)
SE_REDUCTION = 8


def squeeze_excitation(x, name: str):
    """(N, H, W, C) → the same map scaled per channel by sigmoid(FC(ReLU(FC(GAP(x)))))."""
    channels = int(x.shape[-1])
    scale = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    scale = layers.Dense(channels // SE_REDUCTION, activation="relu", name=f"{name}_se_fc1")(scale)
    scale = layers.Dense(channels, activation="sigmoid", name=f"{name}_se_fc2")(scale)
    return layers.Multiply(name=f"{name}_se_scale")([x, scale])


def se_basic_block(x, filters: int, stride: int, name: str):
    """(N, H, W, C_in) → (N, H/stride, W/stride, filters), voxceleb_trainer's SEBasicBlock."""
    in_channels = int(x.shape[-1])
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_a_conv")(x)
    y = layers.Activation("relu", name=f"{name}_a_relu")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_a_bn")(y)
    y = conv_bn(y, filters, 3, 1, name=f"{name}_b")
    y = squeeze_excitation(y, name)
    shortcut = x
    if stride != 1 or in_channels != filters:
        shortcut = conv_bn(x, filters, 1, stride, name=f"{name}_downsample")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out_relu")(y)


def build_thin_resnet34_se(x):
    """(N, S, S, 3) → (N, S/32, S/32, 256) feature map (4×4 at S = 112)."""
    x = conv_bn(x, THIN_RESNET34_SE_WIDTHS[0], 7, 2, name="thin_se_stem", act="relu")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="thin_se_stem_pool")(x)
    for stage, (filters, repeats) in enumerate(zip(THIN_RESNET34_SE_WIDTHS, THIN_RESNET34_SE_DEPTHS, strict=True)):
        for block in range(repeats):
            stride = 2 if block == 0 and stage > 0 else 1
            x = se_basic_block(x, filters, stride, name=f"thin_se_stage{stage}_block{block}")
    return x
