"""``resnet18``: torchvision's ResNet-18 (K. He et al., "Deep Residual Learning for
Image Recognition", CVPR 2016), the EE488B trainer's ``--model ResNet18``.

Stem conv7×7(64, stride 2) → BN → ReLU → max-pool 3×3 stride 2, then
[2, 2, 2, 2] basic blocks (conv3×3 → BN → ReLU → conv3×3 → BN, + shortcut,
→ ReLU) at 64, 128, 256, 512 channels, stages 2-4 starting with stride 2
(conv1×1 + BN shortcut). Total stride 32 (112 → 4); 11,176,512 parameters
without torchvision's FC (11,689,512 with it).
"""

from __future__ import annotations

from keras import layers

from ffem_cli.models.blocks import conv_bn
from ffem_cli.models.thin_resnet import basic_block

RESNET18_WIDTHS = (64, 128, 256, 512)
RESNET18_DEPTHS = (2, 2, 2, 2)


def build_resnet18(x):
    """(N, S, S, 3) → (N, S/32, S/32, 512) feature map."""
    x = conv_bn(x, 64, 7, 2, name="resnet18_stem", act="relu")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="resnet18_stem_pool")(x)
    for stage, (filters, repeats) in enumerate(zip(RESNET18_WIDTHS, RESNET18_DEPTHS, strict=True)):
        for block in range(repeats):
            stride = 2 if block == 0 and stage > 0 else 1
            x = basic_block(x, filters, stride, name=f"resnet18_stage{stage}_block{block}")
    return x
