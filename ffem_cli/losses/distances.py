"""Pairwise distances for the pair losses and miners (``keras.ops`` only).

Each function maps embeddings (B, D) to a (B, B) float32 matrix where a
smaller value means more alike, so every miner reads "hard positive = large,
hard negative = small" whatever the distance:

- ``squared-euclidean``: ``||a - b||²`` (FaceNet's triplet distance; for unit
  vectors ``= 2 - 2 cos``, range [0, 4]).
- ``euclidean``: ``||a - b||`` with a finite gradient at 0 (duplicates).
- ``cosine``: ``1 - cos(a, b)`` (range [0, 2]); normalises internally, so
  zero-norm rows give distance 1 to everything, without NaN.
"""

from keras import ops

from ffem_cli.errors import FfemError
from ffem_cli.losses.numerics import as_float32, l2_normalize


def squared_euclidean(embeddings):
    """(B, D) → (B, B) squared L2 distances, clipped at 0, exact 0 on the diagonal."""
    x = as_float32(embeddings)
    squared_norms = ops.sum(ops.square(x), axis=1)
    gram = ops.matmul(x, ops.transpose(x))
    distances = squared_norms[:, None] - 2.0 * gram + squared_norms[None, :]
    off_diagonal = 1.0 - ops.eye(ops.shape(x)[0], dtype="float32")
    return ops.maximum(distances, 0.0) * off_diagonal


def euclidean(embeddings):
    """(B, D) → (B, B) L2 distances; ``sqrt`` gets a tiny offset only where d = 0.

    Where the squared distance is 0 (diagonal, duplicate embeddings) the
    value is exactly 0 and the gradient is 0 instead of ``inf``.
    """
    squared = squared_euclidean(embeddings)
    is_zero = ops.cast(ops.less_equal(squared, 0.0), "float32")
    return ops.sqrt(squared + is_zero * 1e-16) * (1.0 - is_zero)


def cosine(embeddings):
    """(B, D) → (B, B) cosine distances ``1 - cos``."""
    x = l2_normalize(as_float32(embeddings))
    return 1.0 - ops.matmul(x, ops.transpose(x))


DISTANCES = {
    "squared-euclidean": squared_euclidean,
    "euclidean": euclidean,
    "cosine": cosine,
}


def get_distance(name: str):
    """The distance function registered under ``name``; ``FfemError`` for an unknown one."""
    if name not in DISTANCES:
        raise FfemError(f"unknown distance '{name}'; choose one of: {', '.join(DISTANCES)}")
    return DISTANCES[name]
