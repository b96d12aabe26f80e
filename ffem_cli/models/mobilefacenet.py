"""MobileFaceNet (S. Chen, Y. Liu, X. Gao, Z. Han, "MobileFaceNets: Efficient
CNNs for Accurate Real-Time Face Verification on Mobile Devices", CCBR 2018).

Table 1 of the paper, up to the 1×1 conv to 512 channels; the "linear GDConv
7×7" and "linear conv1×1" that follow are the ``gdc`` head
(``pooling.build_gdc``). PReLU throughout, as in the paper. Published: 0.99M
parameters and 221M MAdds with a 128-d embedding at 112×112.
"""

from __future__ import annotations

from keras import layers

from ffem_cli.models.blocks import conv_bn, depthwise_bn

# (expansion t, output channels c, repeats n, first stride s) — Table 1.
MOBILEFACENET_STAGES = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


def bottleneck(x, expansion: int, filters: int, stride: int, name: str):
    """MobileNetV2 inverted residual with PReLU: 1×1 (t·C_in) → dw3×3 (stride) → linear 1×1.

    (N, H, W, C_in) → (N, H/stride, W/stride, filters); identity shortcut when
    stride is 1 and C_in == filters.
    """
    in_channels = int(x.shape[-1])
    y = conv_bn(x, expansion * in_channels, 1, 1, name=f"{name}_expand", act="prelu")
    y = depthwise_bn(y, 3, stride, name=f"{name}_depthwise", act="prelu")
    y = conv_bn(y, filters, 1, 1, name=f"{name}_project")
    if stride == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def build_mobilefacenet(x):
    """(N, S, S, 3) → (N, S/16, S/16, 512) feature map (7×7 at S = 112)."""
    x = conv_bn(x, 64, 3, 2, name="mfn_stem", act="prelu")
    x = depthwise_bn(x, 3, 1, name="mfn_stem_depthwise", act="prelu")
    for stage, (expansion, filters, repeats, stride) in enumerate(MOBILEFACENET_STAGES):
        for block in range(repeats):
            x = bottleneck(
                x,
                expansion,
                filters,
                stride if block == 0 else 1,
                name=f"mfn_stage{stage}_block{block}",
            )
    return conv_bn(x, 512, 1, 1, name="mfn_head", act="prelu")
