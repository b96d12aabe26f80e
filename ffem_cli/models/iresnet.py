"""Improved ResNet ("IResNet") of insightface's arcface_torch
(J. Deng, J. Guo, N. Xue, S. Zafeiriou, "ArcFace: Additive Angular Margin
Loss for Deep Face Recognition", CVPR 2019; I. C. Duta et al., "Improved
Residual Networks", 2020), layer for layer as
``recognition/arcface_torch/backbones/iresnet.py``:

* stem: conv3×3(64, stride 1) → BN → PReLU;
* four stages of ``IBasicBlock`` with 64, 128, 256, 512 channels, stride 2 in
  the first block of each stage (112 → 56 → 28 → 14 → 7);
* IBasicBlock: BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN, plus the
  identity or a conv1×1(stride) → BN shortcut, no activation after the add.

The output block (BN → dropout → flatten → FC(512) → BN) is the
``flatten-fc`` head. Published (arcface_torch): iresnet50 43.6M parameters and
6.3 G(MAC) per 112×112 image with a 512-d embedding.
"""

from __future__ import annotations

from keras import layers

from ffem_cli.models.blocks import BN_EPSILON, activation, conv_bn

IRESNET_WIDTHS = (64, 128, 256, 512)
IRESNET_DEPTHS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def ibasic_block(x, filters: int, stride: int, name: str):
    """(N, H, W, C_in) → (N, H/stride, W/stride, filters), pre-activation style."""
    in_channels = int(x.shape[-1])
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn1")(x)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn2")(y)
    y = activation(y, "prelu", name)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn3")(y)
    shortcut = x
    if stride != 1 or in_channels != filters:
        shortcut = conv_bn(x, filters, 1, stride, name=f"{name}_downsample")
    return layers.Add(name=f"{name}_add")([y, shortcut])


def build_iresnet(x, depths: tuple[int, int, int, int]):
    """(N, S, S, 3) → (N, S/16, S/16, 512) feature map (7×7 at S = 112)."""
    x = conv_bn(x, IRESNET_WIDTHS[0], 3, 1, name="ires_stem", act="prelu")
    for stage, (filters, repeats) in enumerate(zip(IRESNET_WIDTHS, depths, strict=True)):
        for block in range(repeats):
            x = ibasic_block(x, filters, 2 if block == 0 else 1, name=f"ires_stage{stage}_block{block}")
    return x
