"""Small named building blocks shared by the backbones.

Every layer gets an explicit name derived from ``name`` so that a model built
twice (in two processes, or twice in one) has the same layer names, which is
what checkpoints and saved weights are keyed on.
"""

from __future__ import annotations

from keras import layers

BN_EPSILON = 1e-5  # PyTorch/arcface_torch default; insightface MXNet used 2e-5


def activation(x, kind: str | None, name: str):
    """Apply ``kind`` ("prelu" per-channel, "relu", or None) to a (N, H, W, C) map."""
    if kind is None:
        return x
    if kind == "prelu":
        return layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x)
    return layers.Activation(kind, name=f"{name}_{kind}")(x)


def conv_bn(
    x,
    filters: int,
    kernel: int,
    stride: int,
    name: str,
    act: str | None = None,
):
    """Conv (no bias, "same" padding) → BN → optional activation.

    x: (N, H, W, C_in) → (N, ceil(H/stride), ceil(W/stride), filters).
    """
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return activation(x, act, name)


def depthwise_bn(x, kernel: int, stride: int, name: str, act: str | None = None):
    """Depthwise conv (no bias, "same" padding) → BN → optional activation; keeps C."""
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return activation(x, act, name)
