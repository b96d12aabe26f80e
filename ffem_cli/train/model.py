"""The training model: embedder + loss layer, trained by Keras's own backend train step.

``TrainingModel(images)`` returns the embeddings; ``compute_loss`` hands them
with the labels to the loss layer. Everything else (forward pass, gradients,
loss scaling under ``mixed_float16``, the optimizer update, distribution over
replicas) is Keras's ``train_step`` for the active backend, so the same step
runs on TensorFlow, JAX and PyTorch. Nothing here imports TensorFlow unless
the TensorFlow backend is active.
"""

from __future__ import annotations

import keras
from keras import ops

from ffem_cli.errors import FfemError


class TrainingModel(keras.Model):
    """``embedder`` (images (N, S, S, 3) float32 pixels → (N, D) unit embeddings) + ``loss_layer``.

    ``loss_layer(embeddings, labels)`` gives the scalar mean loss. With
    ``track_accuracy`` the top-1 training accuracy of the layer's margin-free
    ``logits`` is reported as the ``accuracy`` metric: for losses with
    ``logits``, i.e. not of the ``pair`` family (``losses.is_pair_loss``).

    ``margin_warmup_steps`` > 0 (margin losses only, TensorFlow backend): the
    loss applies the fraction ``min(t / margin_warmup_steps, 1)`` of its
    margin at optimizer step ``t``, read from ``optimizer.iterations`` — a
    pure function of the checkpointed step, so a resumed run is exact.
    """

    def __init__(
        self,
        embedder: keras.Model,
        loss_layer: keras.layers.Layer,
        track_accuracy: bool = True,
        margin_warmup_steps: int = 0,
        **kwargs,
    ):
        super().__init__(name="ffem_training", **kwargs)
        self.embedder = embedder
        self.loss_layer = loss_layer
        if margin_warmup_steps:
            if not getattr(loss_layer, "warmable_margin", False):
                raise FfemError(
                    f"margin warm-up needs a margin loss (arcface, cosface, ...); "
                    f"{loss_layer.__class__.__name__} has no margin"
                )
            if keras.backend.backend() != "tensorflow":
                # JAX's stateless loss computation does not see the optimizer's step counter
                raise FfemError("margin warm-up needs the TensorFlow backend")
        self.margin_warmup_steps = int(margin_warmup_steps)
        self.accuracy_tracker = None
        if track_accuracy:
            self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def call(self, images, training=False):
        return self.embedder(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean loss of this replica's batch, divided by the replica count under tf.distribute."""
        # training reaches losses with state (center updates, a feature pool); Keras drops it
        # for layers whose call() has no training argument
        if self.margin_warmup_steps and training:
            loss = self.loss_layer(y_pred, y, training=training, margin_fraction=self.margin_fraction())
        else:
            loss = self.loss_layer(y_pred, y, training=training)
        loss = ops.cast(loss, "float32")
        extra = [ops.cast(value, "float32") for value in self.losses]  # e.g. regularisers
        if extra:
            loss = loss + ops.sum(ops.stack(extra))
        if self.accuracy_tracker is not None:
            # here, not in compute_metrics: Keras's JAX step calls compute_metrics with only
            # the metrics' variables in scope (the head's centres are unreadable there)
            self.accuracy_tracker.update_state(y, self.loss_layer.logits(ops.stop_gradient(y_pred)))
        return _scale_for_replicas(loss)

    def margin_fraction(self):
        """Float32 scalar ``min(t / margin_warmup_steps, 1)`` at optimizer step ``t``."""
        step = ops.cast(self.optimizer.iterations, "float32")
        return ops.minimum(step / float(self.margin_warmup_steps), 1.0)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        results = self.get_metrics_result()
        if _multi_worker():
            # Keras 3.15 averages step logs over workers with strategy.reduce(MEAN, v, axis=0),
            # which fails on scalars ("Invalid reduction dimension 0 for input with 0
            # dimensions"): give each a length-1 axis; the reduce makes them scalars again.
            results = {name: ops.reshape(value, (1,)) for name, value in results.items()}
        return results

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """TensorFlow trainer hook before ``fit``: build the model from a batch's shapes.

        Keras 3.15 first averages a whole distributed batch with
        ``strategy.reduce``, which MultiWorkerMirroredStrategy cannot do for the
        (images, labels) tuple ("Attempt to convert a value (PerReplica...) with
        an unsupported type to a Tensor", keras-team/keras#20585); only shapes
        and dtypes are needed, and one replica's slice has them.
        """
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and data_batch is None and _multi_worker(strategy):
            first_replica = lambda value: strategy.experimental_local_results(value)[0]  # noqa: E731
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(first_replica, next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        tracked = list(super().metrics)
        if self.accuracy_tracker is not None:
            tracked.append(self.accuracy_tracker)
        return tracked


def _scale_for_replicas(loss):
    """Keras sums replica gradients; its own ``compute_loss`` divides by the replica count, so do we."""
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / float(replicas) if replicas > 1 else loss


def _multi_worker(strategy=None) -> bool:
    """True under ``tf.distribute.MultiWorkerMirroredStrategy`` (``strategy``, or the active one)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    strategy = strategy if strategy is not None else tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def build_optimizer(
    name: str,
    learning_rate,
    *,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    clipnorm: float = 0.0,
    grad_accum: int = 1,
) -> keras.optimizers.Optimizer:
    """``sgd`` (momentum, Nesterov), ``adam``, ``adamw`` or ``adagrad`` (MassFace's) from
    ``keras.optimizers``.

    ``learning_rate`` is a float or a ``LearningRateSchedule``; ``weight_decay``
    is Keras's decoupled decay (0 = none); ``clipnorm`` clips each gradient's
    norm (0 = no clipping). ``grad_accum`` N > 1: Keras's gradient
    accumulation — each call adds the batch's gradient to an accumulator and
    every N-th call updates with their mean, so N batches of B equal one batch
    of N·B (for a mean loss with no batch statistics); ``optimizer.iterations``
    (hence the schedule) counts updates, and the accumulators are optimizer
    variables, so checkpoints hold them.
    """
    common = {"learning_rate": learning_rate}
    optimizers = keras.optimizers
    if grad_accum > 1:
        from ffem_cli.train import accumulation as optimizers  # noqa: I001 (same classes, tf.distribute-safe)

        common["gradient_accumulation_steps"] = grad_accum
    if weight_decay:
        common["weight_decay"] = weight_decay
    if clipnorm:
        common["clipnorm"] = clipnorm
    if name == "sgd":
        return optimizers.SGD(momentum=momentum, nesterov=nesterov, **common)
    if name == "adam":
        return optimizers.Adam(**common)
    if name == "adamw":
        common.setdefault("weight_decay", 0.0)
        return optimizers.AdamW(**common)
    if name == "adagrad":
        return optimizers.Adagrad(**common)
    raise FfemError(f"unknown optimizer {name!r}; choose one of: sgd, adam, adamw, adagrad")
