"""``tiny``: a four-block CNN for fast tests and demos (not a real face model).

(N, S, S, 3) normalised pixels → (N, S/16, S/16, 128) features: four
Conv3×3(stride 2) → BN → ReLU blocks with 16, 32, 64, 128 filters
(≈ 97k parameters; 7×7 map at 112×112).
"""

from __future__ import annotations

from ffem_cli.models.blocks import conv_bn

TINY_FILTERS = (16, 32, 64, 128)


def build_tiny(x):
    """(N, H, W, 3) → (N, H/16, W/16, 128) feature map."""
    for index, filters in enumerate(TINY_FILTERS):
        x = conv_bn(x, filters, 3, 2, name=f"tiny_block{index}", act="relu")
    return x
