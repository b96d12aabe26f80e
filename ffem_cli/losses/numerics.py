"""Small numeric helpers shared by the losses (``keras.ops`` only).

Every loss casts its inputs to float32 with :func:`as_float32` first, so a
float16/bfloat16 embedder under mixed precision feeds a float32 loss.
"""

from keras import ops

#: Squared-norm floor for :func:`l2_normalize` (norm floor 1e-3): a zero vector stays zero
#: and its gradient is at most 1e3 × the upstream one, so it still fits float16 (max 65504).
#: Unit-norm embeddings, the contract's input, are unaffected.
NORM_EPSILON = 1e-6
#: Cosines are clipped to [-1 + COS_EPSILON, 1 - COS_EPSILON] before ``arccos``,
#: whose derivative is infinite at ±1 (|d arccos| ≤ ~700 after the clip).
COS_EPSILON = 1e-6
#: Stands in for ±infinity in masked min/max/logsumexp so no ``inf * 0`` NaN appears.
LARGE = 1e9


def as_float32(x):
    """``x`` as a float32 tensor (no copy when it already is)."""
    return ops.cast(x, "float32")


def as_labels(labels):
    """Labels of any int/float dtype and shape (B,) or (B, 1) → int32 (B,)."""
    return ops.reshape(ops.cast(labels, "int32"), (-1,))


def l2_normalize(x, axis=-1):
    """``x / ||x||`` along ``axis``; a zero vector stays zero with a finite gradient."""
    squared_norm = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, NORM_EPSILON))


def masked_log1p_sum_exp(z, mask, axis=-1):
    """``log(1 + Σ_{mask} exp(z))`` along ``axis``, stable; 0 where the mask is empty.

    The log-sum-exp form of the multi-similarity and Proxy-Anchor terms.
    """
    masked = ops.where(mask, z, -LARGE)
    zeros = ops.zeros_like(ops.take(masked, [0], axis=axis))
    return ops.logsumexp(ops.concatenate([zeros, masked], axis=axis), axis=axis)


def identity_masks(labels):
    """Masks (B, B) bool of a batch: ``same`` (incl. the diagonal), ``positive``, ``negative``.

    ``positive[i, j]``: same identity and ``i != j``; ``negative[i, j]``: other identity.
    """
    same = ops.equal(labels[:, None], labels[None, :])
    batch = ops.shape(labels)[0]
    eye = ops.cast(ops.eye(batch), "bool")
    return same, ops.logical_and(same, ops.logical_not(eye)), ops.logical_not(same)
