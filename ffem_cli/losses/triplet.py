"""Triplet losses over any miner's triplets: FaceNet's hinge (Schroff et al., CVPR 2015),
the FFEM seed's adversarial variant, and mining against a feature pool (MassFace)."""

import keras
from keras import ops

from ffem_cli.losses.miners import gather_distances
from ffem_cli.losses.numerics import LARGE, as_float32, as_labels
from ffem_cli.losses.pairs import PairLoss


@keras.saving.register_keras_serializable(package="ffem")
class TripletLoss(PairLoss):
    """``L = mean over mined (a, p, n) of max(0, d(a,p) − d(a,n) + α)``.

    Args:
        margin: α (FaceNet: 0.2 on squared L2 of unit vectors; for
            ``cosine`` distance ``1 − cos`` the same geometry is α/2).
        distance: ``squared-euclidean`` (default), ``euclidean`` or ``cosine``.
        miner: any miner name/layer (default ``batch-hard``), or None for
            every valid triplet. Miners without a margin of their own use α.
        max_triplets: MassFace's ``trip_thresh``: when the miner keeps more
            triplets than this, a uniformly drawn subset of this many enters
            the mean (0 = no cap).
        seed: seeds the draw of that subset.

    When the miner keeps no triplet (one identity in the batch, or nothing
    violates the margin) the loss is exactly 0 with zero gradients.
    """

    def __init__(
        self, margin=0.2, distance="squared-euclidean", miner="batch-hard", max_triplets=0, seed=None, **kwargs
    ):
        super().__init__(distance, miner, **kwargs)
        self.margin = float(margin)
        self.max_triplets, self.seed = int(max_triplets), seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.max_triplets else None

    @property
    def mining_margin(self):
        return self.margin

    def capped_triplets(self, distances, labels):
        """The miner's triplets, at most ``max_triplets`` of them valid (a uniform subset)."""
        anchor, positive, negative, valid = self.mine_triplets(distances, labels)
        if not self.max_triplets or self.max_triplets >= ops.shape(valid)[0]:
            return anchor, positive, negative, valid
        draw = keras.random.uniform(ops.shape(valid), seed=self.seed_generator)
        _, kept = ops.top_k(ops.where(valid > 0, draw, -1.0), self.max_triplets)
        return tuple(ops.take(part, kept) for part in (anchor, positive, negative, valid))

    def compute(self, embeddings, distances, labels):
        anchor, positive, negative, valid = self.capped_triplets(distances, labels)
        hinge = ops.relu(
            gather_distances(distances, anchor, positive) - gather_distances(distances, anchor, negative) + self.margin
        )
        return ops.sum(hinge * valid) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "max_triplets": self.max_triplets, "seed": self.seed}


@keras.saving.register_keras_serializable(package="ffem")
class AdversarialTripletLoss(PairLoss):
    """The FFEM seed's (seed 000) ``adversarial_triplet_loss``.

    ``L = mean over mined (a, p, n) of log(1 + d(a,p)) − log(ε + d(a,n))``

    The two terms pull the positive in and push the negative out without a
    hinge, so the loss never reaches zero. Same triplets as the seed's
    ``original_triplet_loss`` (batch-hard, squared L2 of the unit
    embeddings); ε = 0.001.
    """

    def __init__(self, distance="squared-euclidean", miner="batch-hard", epsilon=1e-3, **kwargs):
        super().__init__(distance, miner, **kwargs)
        self.epsilon = float(epsilon)

    def compute(self, embeddings, distances, labels):
        anchor, positive, negative, valid = self.mine_triplets(distances, labels)
        pull = ops.log(1.0 + gather_distances(distances, anchor, positive))
        push = ops.log(self.epsilon + gather_distances(distances, anchor, negative))
        return ops.sum((pull - push) * valid) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="ffem")
class PoolTripletLoss(TripletLoss):
    """Triplet loss mined against a feature pool larger than the batch (MassFace's
    semi-online mining: triplets chosen among B ≫ batch features).

    The pool holds ``pool_size`` earlier embeddings with their labels
    (non-trainable weights, saved with the checkpoint). Each call mines over
    the batch and the pool together, with the usual miner on the
    ``(batch + pool)²`` distances; only triplets whose anchor is in the batch
    count, and positives and negatives may come from the pool (as constants:
    no gradient reaches them). With ``training=True`` the batch's embeddings
    replace the oldest pool entries every ``refresh_every`` calls, so the
    pool is at most ``pool_size / batch · refresh_every`` steps old. Empty
    slots (label −1) never enter a triplet.
    """

    def __init__(
        self,
        margin=0.25,
        distance="squared-euclidean",
        miner="batch-min-max",
        max_triplets=0,
        seed=None,
        pool_size=1024,
        refresh_every=1,
        **kwargs,
    ):
        super().__init__(margin, distance, miner, max_triplets, seed, **kwargs)
        self.pool_size, self.refresh_every = int(pool_size), int(refresh_every)
        self.pool_features = None

    def build(self, embeddings_shape, labels_shape=None):
        width = int(embeddings_shape[-1])
        self.pool_features = self.add_weight(
            shape=(self.pool_size, width), initializer="zeros", trainable=False, name="pool_features"
        )
        self.pool_labels = self.add_weight(
            shape=(self.pool_size,),
            initializer=keras.initializers.Constant(-1),
            dtype="int32",
            trainable=False,
            name="pool_labels",
        )
        self.calls = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False, name="calls")

    def call(self, embeddings, labels, training=None):
        embeddings, labels = as_float32(embeddings), as_labels(labels)
        batch = ops.shape(embeddings)[0]
        pooled = ops.concatenate([embeddings, ops.convert_to_tensor(self.pool_features)], axis=0)
        pooled_labels = ops.concatenate([labels, ops.convert_to_tensor(self.pool_labels)], axis=0)
        distances = self.distance_fn(pooled)
        # an empty slot gets a label of its own (no positive) and is pushed out of reach
        slots = ops.arange(ops.shape(pooled_labels)[0], dtype="int32")
        empty = ops.less(pooled_labels, 0)
        mining_labels = ops.where(empty, -1 - slots, pooled_labels)
        far = ops.cast(ops.logical_or(empty[:, None], empty[None, :]), "float32") * LARGE
        anchor, positive, negative, valid = self.capped_triplets(distances + far, mining_labels)
        valid = valid * ops.cast(ops.less(anchor, batch), "float32")
        hinge = ops.relu(
            gather_distances(distances, anchor, positive) - gather_distances(distances, anchor, negative) + self.margin
        )
        loss = ops.sum(hinge * valid) / ops.maximum(ops.sum(valid), 1.0)
        if training:
            self.refresh(ops.stop_gradient(embeddings), labels)
        return loss

    def refresh(self, embeddings, labels):
        """Every ``refresh_every`` calls, write the batch over the oldest pool entries."""
        batch = ops.shape(embeddings)[0]
        start = (self.calls // self.refresh_every) * batch
        rows = (start + ops.arange(batch, dtype="int32")) % self.pool_size
        due = ops.equal(self.calls % self.refresh_every, 0)
        features = ops.where(due, ops.scatter_update(self.pool_features, rows[:, None], embeddings), self.pool_features)
        pool_labels = ops.where(due, ops.scatter_update(self.pool_labels, rows[:, None], labels), self.pool_labels)
        self.pool_features.assign(features)
        self.pool_labels.assign(pool_labels)
        self.calls.assign(self.calls + 1)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "refresh_every": self.refresh_every}
