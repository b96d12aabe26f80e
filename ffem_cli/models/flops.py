"""Parameter and compute counts of a built Keras model.

Conventions (stated here because papers differ):

* **parameters** — every weight except BatchNormalization's moving mean and
  variance (PyTorch keeps those as buffers, not parameters, so this matches
  the ``sum(p.numel() for p in model.parameters())`` figures of
  arcface_torch and the papers).
* **MACs** — multiply-accumulates of the Conv2D, DepthwiseConv2D and Dense
  layers for ONE image: output positions × kernel size. Biases, BN,
  activations, additions and pooling are not counted (they are < 1% for these
  networks). This is the MobileFaceNets paper's "MAdds" and what
  arcface_torch reports as "GFLOPs".
* **FLOPs** = 2 · MACs (a multiply and an add). A training step costs about
  3× the forward FLOPs (forward + two backward products).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import keras
from keras import layers

MAC_LAYERS = (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)


def iter_layers(model: keras.Model) -> Iterator[keras.Layer]:
    """Every leaf layer of ``model``, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def count_parameters(model: keras.Model) -> int:
    """Weights of ``model`` excluding BatchNormalization moving statistics."""
    total = 0
    for layer in iter_layers(model):
        moving = (
            {id(layer.moving_mean), id(layer.moving_variance)}
            if isinstance(layer, layers.BatchNormalization)
            else set()
        )
        total += sum(math.prod(w.shape) for w in layer.weights if id(w) not in moving)
    return total


def layer_macs(layer: keras.Layer) -> int:
    """Multiply-accumulates of one conv/dense layer for a batch of one (0 for others)."""
    if not isinstance(layer, MAC_LAYERS):
        return 0
    # Kernel (kh, kw, C_in/groups, C_out), depthwise (kh, kw, C_in, multiplier) or
    # dense (C_in, C_out): each output position uses every kernel entry once.
    output_positions = math.prod(layer.output.shape[1:-1])
    return output_positions * math.prod(layer.kernel.shape)


def count_macs(model: keras.Model) -> int:
    """Forward multiply-accumulates of ``model`` for one image (see module docstring)."""
    return sum(layer_macs(layer) for layer in iter_layers(model))


def count_flops(model: keras.Model) -> int:
    """Forward FLOPs for one image: 2 · MACs."""
    return 2 * count_macs(model)
