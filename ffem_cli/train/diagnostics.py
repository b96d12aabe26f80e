"""Figures that show training going wrong before a NaN does, measured each epoch on a fixed probe batch.

The probe batch is the first batch of epoch 0 without augmentation (P×K
when the loss needs it), drawn once; each epoch end embeds it with the
current weights (inference mode) and adds to the epoch's ``metrics.jsonl``
line (and TensorBoard):

- ``diag/mean_cosine``: mean cosine similarity over all pairs of distinct
  probe embeddings; ``diag/spread``: ``sqrt(D) ·`` the mean per-dimension
  standard deviation (about 1 for unit vectors spread over the sphere, 0 when
  every embedding is the same). Collapse warning: mean cosine > 0.95 or
  spread < 0.05.
- margin heads (``CosineHead`` subclasses: CosFace, ArcFace, ...):
  ``diag/target_cos``, the mean ``cos θ_y`` of each sample with its own class
  centre, and ``diag/inside_margin``, the fraction whose margin-penalised
  target ``margin(cos θ_y)`` does not exceed its largest other cosine (the
  sample still violates the margin). Warning from epoch 3 on when ≥ 0.99.
- pair losses: ``diag/mined`` the tuples the miner keeps on the probe batch
  (as triplets) and ``diag/active`` the fraction of them still violating,
  ``d(a, n) − d(a, p) < margin``; ``diag/zero_loss_streak`` the longest run of
  consecutive steps with loss exactly 0 in the epoch. Warnings: no active
  tuple; a streak of ≥ 20 steps.
- ``diag/grad_norm``: the global L2 norm of the loss's gradient over every
  trainable weight on the probe batch (TensorFlow backend; inference mode,
  so no BatchNorm statistic or other state changes). Warning when it
  is not finite or below 1e-7 (nothing learns).

The learning rate is already in every line (``lr``). NumPy does all of it
except the model call, the miner call and the gradient.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ffem_cli.console import err

COLLAPSE_COSINE = 0.95
COLLAPSE_SPREAD = 0.05
INSIDE_MARGIN = 0.99
INSIDE_MARGIN_FROM_EPOCH = 3
ZERO_LOSS_STREAK = 20
VANISHING_GRADIENT = 1e-7


def collapse_figures(embeddings: np.ndarray) -> dict[str, float]:
    """``mean_cosine`` over distinct pairs and ``spread`` of ``(N, D)`` embeddings (normalised here)."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    n, d = unit.shape
    cosines = unit @ unit.T
    mean_cosine = (cosines.sum() - np.trace(cosines)) / (n * (n - 1))
    return {"mean_cosine": float(mean_cosine), "spread": float(math.sqrt(d) * unit.std(axis=0).mean())}


def margin_figures(cosines: np.ndarray, labels: np.ndarray, margined_target: np.ndarray) -> dict[str, float]:
    """``target_cos`` and ``inside_margin`` from ``(B, C)`` cosines, labels and ``margin(cos θ_y)`` (B,)."""
    rows = np.arange(len(labels))
    target = cosines[rows, labels]
    others = cosines.copy()
    others[rows, labels] = -np.inf
    inside = margined_target <= others.max(axis=1)
    return {"target_cos": float(target.mean()), "inside_margin": float(inside.mean())}


def active_figures(distances: np.ndarray, anchor, positive, negative, valid, margin: float) -> dict[str, float]:
    """``mined`` tuples and the ``active`` fraction with ``d(a,n) − d(a,p) < margin`` among them."""
    valid = np.asarray(valid) > 0
    gap = distances[negative, anchor] - distances[positive, anchor]
    mined = int(valid.sum())
    active = int((valid & (gap < margin)).sum())
    return {"mined": float(mined), "active": active / mined if mined else 0.0}


class Diagnostics(keras.callbacks.Callback):
    """Counts zero-loss streaks step by step; ``epoch_figures`` measures the rest at the epoch's end."""

    def __init__(self, parts, probe: tuple[np.ndarray, np.ndarray]):
        super().__init__()
        self.parts = parts
        self.images, self.labels = probe
        self.streak = 0
        self.longest = 0

    def on_train_batch_end(self, batch, logs=None):
        loss = float(np.asarray((logs or {}).get("loss", np.nan)))
        self.streak = self.streak + 1 if loss == 0.0 else 0
        self.longest = max(self.longest, self.streak)

    def epoch_figures(self, epoch: int) -> dict[str, float]:
        """This epoch's ``diag/*`` figures; prints a ``warning:`` line for each threshold crossed."""
        from keras import ops

        from ffem_cli.losses.heads import CosineHead
        from ffem_cli.losses.pairs import PairLoss

        head = self.parts.loss_layer
        embeddings = np.asarray(self.parts.embedder(self.images, training=False), dtype=np.float32)
        figures = collapse_figures(embeddings)
        warnings = []
        if figures["mean_cosine"] > COLLAPSE_COSINE or figures["spread"] < COLLAPSE_SPREAD:
            warnings.append(
                f"embedding collapse: mean cosine {figures['mean_cosine']:.3f} between different "
                f"faces, spread {figures['spread']:.3f} (lower the learning rate?)"
            )
        if isinstance(head, CosineHead):
            cosines = np.asarray(head.logits(embeddings), dtype=np.float32)
            target = cosines[np.arange(len(self.labels)), self.labels]
            margined = np.asarray(head.margin(ops.convert_to_tensor(target[:, None])), dtype=np.float32)[:, 0]
            figures.update(margin_figures(cosines, self.labels, margined))
            if epoch >= INSIDE_MARGIN_FROM_EPOCH and figures["inside_margin"] >= INSIDE_MARGIN:
                warnings.append(
                    f"{figures['inside_margin']:.0%} of samples are still inside the margin "
                    f"(mean target cos θ {figures['target_cos']:.3f}); the margin head is not converging"
                )
        elif isinstance(head, PairLoss):
            from ffem_cli.losses.miners import DEFAULT_MARGIN

            distances = head.distance_fn(ops.convert_to_tensor(embeddings))
            mined = [np.asarray(x) for x in head.mine_triplets(distances, ops.convert_to_tensor(self.labels))]
            margin = head.mining_margin if head.mining_margin is not None else DEFAULT_MARGIN
            figures.update(active_figures(np.asarray(distances), *mined, margin))
            figures["zero_loss_streak"] = float(self.longest)
            if figures["active"] == 0.0:
                warnings.append(
                    "the miner finds no active tuple on the probe batch (every mined tuple "
                    "already satisfies the margin)"
                )
            if self.longest >= ZERO_LOSS_STREAK:
                warnings.append(f"the loss was exactly 0 for {self.longest} consecutive steps")
        norm = gradient_norm(self.parts.model, self.images, self.labels)
        if norm is not None:
            figures["grad_norm"] = norm
            if not math.isfinite(norm) or norm < VANISHING_GRADIENT:
                warnings.append(f"gradient norm {norm:.3g} on the probe batch")
        self.longest = self.streak
        for warning in warnings:
            err.print(f"warning: epoch {epoch}: {warning}", highlight=False)
        return {f"diag/{name}": value for name, value in figures.items()}


def gradient_norm(model, images: np.ndarray, labels: np.ndarray) -> float | None:
    """Global L2 norm of d(loss)/d(weights) on one batch (inference mode); None off TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    with tf.GradientTape() as tape:
        embeddings = model(images, training=False)
        loss = model.loss_layer(embeddings, labels)
    weights = model.trainable_variables
    gradients = [g for g in tape.gradient(loss, weights) if g is not None]
    return float(tf.linalg.global_norm(gradients)) if gradients else 0.0


def probe_batch(pack, config, pk) -> tuple[np.ndarray, np.ndarray]:
    """The fixed probe: epoch 0's first batch of ``pack`` (a ``PackDir``), unaugmented (at most 64 images for plain batches)."""
    from ffem_cli.data.pipeline import Augment, train_dataset

    size = config.batch_size if pk else min(config.batch_size, 64)
    images, labels = next(iter(train_dataset(pack, size, epoch=0, seed=config.seed, augment=Augment.off(), pk=pk)))
    return np.asarray(images), np.asarray(labels)
