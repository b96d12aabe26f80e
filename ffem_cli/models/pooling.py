"""Embedding heads: a backbone feature map (N, h, w, C) → an embedding (N, D).

Every head ends in a float32 BatchNormalization so that the embedding (and the
L2 normalisation the embedder applies after it) stays float32 under a mixed
precision policy. Registry ``POOLINGS`` maps a name to a ``registry.Entry`` whose
``build(features, embedding_size, dropout, l2) -> (N, D)`` takes ``l2``, the L2
kernel regulariser factor of its FC (0 = none).

* ``gap`` — global average pooling → dropout → FC(D) → BN.
* ``gnap`` — Global Norm-Aware Pooling (S. Chen et al., "Global Norm-Aware
  Pooling for Pose-Robust Face Recognition at Low False Positive Rate",
  arXiv:1808.00435, 2018), as in insightface's MXNet ``fc_type='GNAP'``:
  BN → reweight every position by (mean norm / its norm) → GAP → FC → BN.
* ``gdc`` — Global Depthwise Convolution (S. Chen et al., "MobileFaceNets",
  CCBR 2018): depthwise conv with kernel = map size → BN → FC(D) → BN.
* ``flatten-fc`` — the insightface / arcface_torch ``IResNet`` output block
  (J. Deng et al., ArcFace, CVPR 2019): BN → dropout → flatten → FC(D) → BN
  with γ fixed at 1.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from ffem_cli.models.blocks import BN_EPSILON, activation
from ffem_cli.registry import Entry


@keras.saving.register_keras_serializable(package="ffem")
class NormAwareReweight(layers.Layer):
    """GNAP's norm-aware reweighting of a feature map (Chen et al. 2018, eq. 1-2).

    Input and output (N, h, w, C). With n_ij = ‖x_ij‖₂ the L2 norm over channels
    at position (i, j) and n̄ the mean of n_ij over the h·w positions *of the
    same image*, returns x_ij · n̄ / n_ij: positions with a small feature norm
    are boosted, large ones damped. n_ij is taken as sqrt(‖x_ij‖² + epsilon)
    so that an all-zero position stays 0 and has a finite gradient. (insightface's MXNet code took
    n̄ over the whole batch; the per-image mean keeps inference independent of
    the batch.) Computed in float32 whatever the layer's dtype policy.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        features = ops.cast(inputs, "float32")
        squared = ops.sum(ops.square(features), axis=-1, keepdims=True)
        norms = ops.sqrt(squared + self.epsilon)
        mean_norm = ops.mean(norms, axis=(1, 2), keepdims=True)
        weights = mean_norm / norms
        return ops.cast(features * weights, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def fc_regularizer(l2: float):
    """The head FC's kernel regulariser: L2 with factor ``l2`` (the seeds' 5e-4), or none."""
    return keras.regularizers.L2(l2) if l2 > 0 else None


def embedding_bn(x, name: str, scale: bool = True):
    """The head's last layer: BN over the (N, D) embedding, computed in float32."""
    return layers.BatchNormalization(epsilon=BN_EPSILON, scale=scale, dtype="float32", name=f"{name}_embedding_bn")(x)


def build_gap(features, embedding_size: int, dropout: float, l2: float = 0.0):
    """(N, h, w, C) → GAP (N, C) → dropout → FC (N, D) → BN."""
    x = layers.GlobalAveragePooling2D(name="gap_pool")(features)
    if dropout > 0:
        x = layers.Dropout(dropout, name="gap_dropout")(x)
    x = layers.Dense(embedding_size, use_bias=False, kernel_regularizer=fc_regularizer(l2), name="gap_fc")(x)
    return embedding_bn(x, "gap")


def build_gnap(features, embedding_size: int, dropout: float, l2: float = 0.0):
    """(N, h, w, C) → GNAP → (N, D), following insightface's ``fc_type='GNAP'``.

    If D > C a 1×1 conv → BN → PReLU first widens the map to D channels. Then
    BN (no γ) → :class:`NormAwareReweight` → GAP (N, C); if D < C, BN (no γ)
    → dropout → FC(D), else dropout only; finally BN.
    """
    channels = int(features.shape[-1])
    x = features
    if embedding_size > channels:
        x = layers.Conv2D(embedding_size, 1, use_bias=False, name="gnap_expand_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name="gnap_expand_bn")(x)
        x = activation(x, "prelu", "gnap_expand")
        channels = embedding_size
    x = layers.BatchNormalization(epsilon=BN_EPSILON, scale=False, name="gnap_bn")(x)
    x = NormAwareReweight(name="gnap_reweight")(x)
    x = layers.GlobalAveragePooling2D(name="gnap_pool")(x)
    narrowing = embedding_size < channels
    if narrowing:
        x = layers.BatchNormalization(epsilon=BN_EPSILON, scale=False, name="gnap_pool_bn")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="gnap_dropout")(x)
    if narrowing:
        x = layers.Dense(embedding_size, kernel_regularizer=fc_regularizer(l2), name="gnap_fc")(x)
    return embedding_bn(x, "gnap")


def build_gdc(features, embedding_size: int, dropout: float, l2: float = 0.0):
    """(N, h, w, C) → depthwise h×w conv (valid) → BN → (N, C) → dropout → FC(D) → BN.

    The "linear GDC" + "linear conv1×1" of MobileFaceNets (Table 1): no
    activation anywhere; the kernel covers the whole map (7×7 at 112 input).
    """
    kernel = (int(features.shape[1]), int(features.shape[2]))
    x = layers.DepthwiseConv2D(kernel, padding="valid", use_bias=False, name="gdc_dwconv")(features)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="gdc_bn")(x)
    x = layers.Flatten(name="gdc_flatten")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="gdc_dropout")(x)
    x = layers.Dense(embedding_size, use_bias=False, kernel_regularizer=fc_regularizer(l2), name="gdc_fc")(x)
    return embedding_bn(x, "gdc")


def build_flatten_fc(features, embedding_size: int, dropout: float, l2: float = 0.0):
    """(N, h, w, C) → BN → dropout → flatten (N, h·w·C) → FC(D, bias) → BN (γ = 1).

    arcface_torch ``IResNet``'s ``bn2 → dropout → flatten → fc → features``;
    ``features`` is a BatchNorm1d whose weight is frozen at 1, i.e. no γ here.
    """
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="flatten_fc_bn")(features)
    if dropout > 0:
        x = layers.Dropout(dropout, name="flatten_fc_dropout")(x)
    x = layers.Flatten(name="flatten_fc_flatten")(x)
    x = layers.Dense(embedding_size, kernel_regularizer=fc_regularizer(l2), name="flatten_fc_fc")(x)
    return embedding_bn(x, "flatten_fc", scale=False)


POOLINGS: dict[str, Entry] = {
    "gap": Entry(build_gap, "—", summary="global average pooling → FC → BN"),
    "gnap": Entry(
        build_gnap, "Chen et al. 2018, arXiv:1808.00435 (GNAP)", summary="norm-aware reweighting → GAP → FC → BN"
    ),
    "gdc": Entry(
        build_gdc,
        "Chen et al. 2018, MobileFaceNets (CCBR)",
        summary="global depthwise conv (kernel = map size) → BN → FC → BN",
    ),
    "flatten-fc": Entry(
        build_flatten_fc,
        "Deng et al. 2019, ArcFace (CVPR); arcface_torch IResNet",
        summary="BN → dropout → flatten → FC → BN (insightface output block)",
    ),
}
