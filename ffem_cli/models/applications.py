"""Backbones taken from ``keras.applications`` (random init, no download).

Each is built with ``include_top=False, weights=None`` for the embedder's
input size and nested as one layer; it receives the already-normalised pixels
((x - 127.5) / 128, about [-1, 1]), so MobileNetV3's own rescaling layer is
switched off. Their total stride is 32, so a 112×112 face gives a 4×4 map
(the ``gdc`` head sizes its kernel to the map).
"""

from __future__ import annotations

import keras


def build_mobilenetv3_small(x):
    """MobileNetV3-Small (A. Howard et al., ICCV 2019): (N, S, S, 3) → (N, S/32, S/32, 576)."""
    backbone = keras.applications.MobileNetV3Small(
        input_shape=tuple(x.shape[1:]),
        include_top=False,
        weights=None,
        include_preprocessing=False,
        name="mobilenetv3_small",
    )
    return backbone(x)


def build_mobilenetv3_large(x):
    """MobileNetV3-Large (A. Howard et al., ICCV 2019): (N, S, S, 3) → (N, S/32, S/32, 960)."""
    backbone = keras.applications.MobileNetV3Large(
        input_shape=tuple(x.shape[1:]),
        include_top=False,
        weights=None,
        include_preprocessing=False,
        name="mobilenetv3_large",
    )
    return backbone(x)


def build_resnet50(x):
    """ResNet50 (K. He et al., CVPR 2016): (N, S, S, 3) → (N, S/32, S/32, 2048)."""
    backbone = keras.applications.ResNet50(
        input_shape=tuple(x.shape[1:]), include_top=False, weights=None, name="resnet50"
    )
    return backbone(x)
