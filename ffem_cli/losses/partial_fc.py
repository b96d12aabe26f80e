"""Partial FC (An et al., "Killing Two Birds with One Stone", CVPR 2022; insightface partial_fc_v2).

A margin head with ``sample_rate`` r < 1 scores each step against a
sample ``S`` of k = max(⌈r·C⌉, B) classes instead of all C:

``L = -log( e^{s·margin(cos θ_y)} / (e^{s·margin(cos θ_y)} + Σ_{j∈S, j≠y} e^{s·cos θ_j}) )``

``S`` holds every class of the *global* batch (the positives; labels are
all-gathered over TensorFlow replicas, so every replica draws the
same ``S``) plus classes drawn uniformly without replacement, as
partial_fc_v2 draws them: a uniform score per class, 2 for the positives,
top-k. Only the k sampled rows of the (C·K, D) centre matrix are gathered,
so the logits are (B, k), never (B, C), and the TensorFlow gradient of the
centres is an ``IndexedSlices`` of k rows: ``train.head_optimizer`` updates
those rows (and their optimizer slots) only.
"""

import math

import keras
from keras import ops

from ffem_cli.backend_ops import all_gather, gather_rows
from ffem_cli.errors import FfemError
from ffem_cli.losses.numerics import as_float32, l2_normalize


def check_sample_rate(sample_rate) -> float:
    """``sample_rate`` as a float in (0, 1]; ``FfemError`` otherwise."""
    rate = float(sample_rate)
    if not 0.0 < rate <= 1.0:
        raise FfemError(f"sample rate must be in (0, 1], got {sample_rate}")
    return rate


def sampled_count(num_classes: int, sample_rate: float, batch_size: int) -> int:
    """k: ⌈r·C⌉ classes, but at least the global batch (every positive fits) and at most C."""
    return min(num_classes, max(math.ceil(sample_rate * num_classes), batch_size))


def sample_classes(positives, num_classes: int, count: int, seed_generator):
    """(k,) int32 class ids: every id in ``positives`` (B,) plus uniform others, top-k of scores."""
    score = keras.random.uniform((num_classes,), seed=seed_generator)
    score = ops.scatter_update(score, positives[:, None], ops.full(ops.shape(positives), 2.0))
    _, index = ops.top_k(score, count, sorted=False)
    return ops.cast(index, "int32")


def sampled_loss(head, embeddings, labels, margin_fraction=1.0):
    """The margin cross-entropy of ``head`` (a ``CosineHead`` with ``centres``) over a sampled class set.

    ``embeddings`` (B, D) float, ``labels`` (B,) int32 → scalar float32.
    """
    positives = all_gather(labels)  # the global batch's labels over replicas
    batch = positives.shape[0]
    if batch is None:  # traced with an unknown batch (TensorFlow): k as a tensor
        batch = ops.shape(positives)[0]
        count = ops.minimum(head.num_classes, ops.maximum(math.ceil(head.sample_rate * head.num_classes), batch))
    else:
        count = sampled_count(head.num_classes, head.sample_rate, batch)
    index = ops.stop_gradient(sample_classes(positives, head.num_classes, count, head.sampler))
    per_class = head.kernel_columns // head.num_classes  # K sub-centres, class-major rows
    rows = ops.reshape(index[:, None] * per_class + ops.arange(per_class, dtype="int32")[None, :], (-1,))
    centres = l2_normalize(gather_rows(head.centres, rows), axis=1)  # (k·K, D)
    cosines = ops.matmul(l2_normalize(as_float32(embeddings)), ops.transpose(centres))
    cosines = head.class_cosines(cosines)  # (B, k)
    local_labels = ops.argmax(ops.cast(ops.equal(labels[:, None], index[None, :]), "int32"), axis=1)
    return head.margin_cross_entropy(cosines, ops.cast(local_labels, "int32"), margin_fraction)
