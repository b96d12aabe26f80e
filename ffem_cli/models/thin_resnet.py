"""``thin-resnet34``: the half-width ResNet34 the EE488B face trainer pretrains
("ThinResNet34, ~5M param"; after clovaai/voxceleb_trainer's ResNetSE34V2,
J. S. Chung et al., "In defence of metric learning for speaker recognition",
Interspeech 2020), without the SE blocks and adapted to 112×112 faces.

Stem conv3×3(32, stride 1) → BN → ReLU, then ResNet34's [3, 4, 6, 3] basic
blocks (conv3×3 → BN → ReLU → conv3×3 → BN, + shortcut, → ReLU) at half
width — 32, 64, 128, 256 channels — each stage starting with stride 2
(112 → 56 → 28 → 14 → 7). About 5.3M parameters before the head.
"""

from __future__ import annotations

from keras import layers

from ffem_cli.models.blocks import conv_bn

THIN_RESNET34_WIDTHS = (32, 64, 128, 256)
THIN_RESNET34_DEPTHS = (3, 4, 6, 3)


def basic_block(x, filters: int, stride: int, name: str):
    """(N, H, W, C_in) → (N, H/stride, W/stride, filters), post-activation (He 2016)."""
    in_channels = int(x.shape[-1])
    y = conv_bn(x, filters, 3, stride, name=f"{name}_a", act="relu")
    y = conv_bn(y, filters, 3, 1, name=f"{name}_b")
    shortcut = x
    if stride != 1 or in_channels != filters:
        shortcut = conv_bn(x, filters, 1, stride, name=f"{name}_downsample")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out_relu")(y)


def build_thin_resnet34(x):
    """(N, S, S, 3) → (N, S/16, S/16, 256) feature map (7×7 at S = 112)."""
    x = conv_bn(x, THIN_RESNET34_WIDTHS[0], 3, 1, name="thin_stem", act="relu")
    for stage, (filters, repeats) in enumerate(zip(THIN_RESNET34_WIDTHS, THIN_RESNET34_DEPTHS, strict=True)):
        for block in range(repeats):
            x = basic_block(x, filters, 2 if block == 0 else 1, name=f"thin_stage{stage}_block{block}")
    return x
