"""``build_embedder``: backbone + embedding head + L2 normalisation.

The model follows the contract in docs/architecture.md: a ``keras.Model``
named ``embedder``; input float32 (N, S, S, 3) raw RGB pixels in [0, 255];
first layer (x - 127.5) / 128; output the L2-normalised embedding
(N, embedding_size) in float32, also under a mixed precision policy.
"""

from __future__ import annotations

import contextlib

import keras
from keras import layers

from ffem_cli.errors import FfemError
from ffem_cli.models.backbones import BACKBONES
from ffem_cli.models.flops import iter_layers
from ffem_cli.models.pooling import POOLINGS
from ffem_cli.registry import lookup

# Weight of the old value in BatchNorm's moving mean/variance: 0.9, insightface's
# (PyTorch momentum 0.1). Keras's 0.99 (0.999 in keras.applications' MobileNetV3)
# leaves the inference statistics so far behind after a short training that every
# face got the same embedding (LFW View 1 at chance after ~1,000 steps).
BN_MOMENTUM = 0.9
#: Name of the identity layer on the backbone's feature map.
BACKBONE_OUTPUT = "backbone_output"


def build_embedder(
    backbone: str = "mobilefacenet",
    pooling: str | None = "gdc",
    embedding_size: int = 512,
    input_size: int = 112,
    dropout: float = 0.0,
    head_l2: float = 0.0,
) -> keras.Model:
    """Build the embedding model.

    backbone: a ``BACKBONES`` name; pooling: a ``POOLINGS`` name, or None for
    the backbone's published head (``BACKBONES[backbone].default_pooling``);
    embedding_size: D, the output width; input_size: S, the side of the square
    face crop in pixels; dropout: rate before the head's FC layer (0 = none);
    head_l2: L2 kernel regulariser factor of the head's FC (0 = none; the
    seeds' 5e-4). The backbone's output passes an identity layer named
    ``BACKBONE_OUTPUT`` (see :func:`backbone_of`).
    Returns a model (N, S, S, 3) float32 pixels → (N, D) float32, unit L2 norm.
    Raises ``FfemError`` for an unknown name or an out-of-range value.
    """
    spec = lookup(BACKBONES, backbone, "backbone")
    pooling = spec.default_pooling if pooling is None else pooling
    head = lookup(POOLINGS, pooling, "pooling")
    if input_size < spec.min_input_size:
        raise FfemError(
            f"input size {input_size} is too small for backbone {backbone!r} (at least {spec.min_input_size} pixels)"
        )
    if embedding_size < 1:
        raise FfemError(f"embedding size must be a positive integer, got {embedding_size}")
    if head_l2 < 0:
        raise FfemError(f"head L2 factor must not be negative, got {head_l2}")
    if not 0.0 <= dropout < 1.0:
        raise FfemError(f"dropout must be in [0, 1), got {dropout}")

    pixels = keras.Input((input_size, input_size, 3), dtype="float32", name="pixels")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.5 / 128.0, name="normalize_pixels")(pixels)
    features = layers.Identity(name=BACKBONE_OUTPUT)(spec.build(x))
    embedding = head.build(features, embedding_size, dropout, head_l2)
    unit = layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize")(embedding)
    model = keras.Model(pixels, unit, name="embedder")
    for layer in iter_layers(model):  # keras.applications' nested models too
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM  # part of the layer's config: saved and loaded
    return model


def backbone_of(embedder: keras.Model) -> keras.Model:
    """The backbone part of an ffem embedder: pixels → feature map, sharing its layers.

    Everything up to the ``BACKBONE_OUTPUT`` layer (the pixel normalisation,
    which has no weights, and the backbone); the embedding head after it is
    not included. ``FfemError`` for a model without that layer.
    """
    try:
        features = embedder.get_layer(BACKBONE_OUTPUT).output
    except ValueError:
        raise FfemError(
            f"model {embedder.name!r} has no {BACKBONE_OUTPUT!r} layer "
            "(not an ffem embedder, or saved before backbones were marked)"
        ) from None
    return keras.Model(embedder.inputs, features, name="backbone")


@contextlib.contextmanager
def precision_policy(precision: str):
    """Keras's global dtype policy inside the block: ``precision`` is ``fp32`` (= ``float32``),
    ``mixed_float16`` or ``mixed_bfloat16`` (a ``TrainConfig.precision``); the previous policy is
    restored after the block, also when it raises."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32" if precision == "fp32" else precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
