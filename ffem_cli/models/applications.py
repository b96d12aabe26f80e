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


def build_mobilenetv3_minimalistic(x):
    """MobileNetV3-Large minimalistic: ReLU6, 3×3 kernels, no SE (the FFEM seed 001's
    backbone): (N, S, S, 3) → (N, S/32, S/32, 960).

    Keras's minimalistic variant uses uncapped ReLU layers; they are capped at 6
    (``max_value`` is part of each layer's config, so it is saved and loaded).
    """
    backbone = keras.applications.MobileNetV3Large(
        input_shape=tuple(x.shape[1:]),
        include_top=False,
        weights=None,
        minimalistic=True,
        include_preprocessing=False,
        name="mobilenetv3_minimalistic",
    )
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.ReLU):
            layer.max_value = 6.0
    return backbone(x)


def build_mobilenetv2(x):
    """MobileNetV2 (M. Sandler et al., CVPR 2018): (N, S, S, 3) → (N, S/32, S/32, 1280)."""
    backbone = keras.applications.MobileNetV2(
        input_shape=tuple(x.shape[1:]), include_top=False, weights=None, name="mobilenetv2"
    )
    return backbone(x)


def build_efficientnetb3(x):
    """EfficientNet-B3 (M. Tan & Q. V. Le, ICML 2019): (N, S, S, 3) → (N, S/32, S/32, 1536).

    Keras's EfficientNet rescales [0, 255] pixels itself, so the normalised
    pixels are first mapped back to [0, 255] (x · 128 + 127.5); ImageNet
    weights loaded with ``--weights`` then see the input they were trained on.
    """
    pixels = keras.layers.Rescaling(128.0, offset=127.5, name="efficientnetb3_pixels")(x)
    backbone = keras.applications.EfficientNetB3(
        input_shape=tuple(x.shape[1:]), include_top=False, weights=None, name="efficientnetb3"
    )
    return backbone(pixels)


def build_resnet50v2(x):
    """ResNet50 V2, pre-activation (K. He et al., ECCV 2016), the FFEM seed's "ResNet50":
    (N, S, S, 3) → (N, S/32, S/32, 2048)."""
    backbone = keras.applications.ResNet50V2(
        input_shape=tuple(x.shape[1:]), include_top=False, weights=None, name="resnet50v2"
    )
    return backbone(x)
