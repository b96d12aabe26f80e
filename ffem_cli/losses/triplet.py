"""Triplet losses over any miner's triplets: FaceNet's hinge (Schroff et al., CVPR 2015)
and the FFEM seed's adversarial variant."""

import keras
from keras import ops

from ffem_cli.losses.miners import gather_distances
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

    def __init__(self, margin=0.2, distance="squared-euclidean", miner="batch-hard",
                 max_triplets=0, seed=None, **kwargs):
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
        hinge = ops.relu(gather_distances(distances, anchor, positive)
                         - gather_distances(distances, anchor, negative) + self.margin)
        return ops.sum(hinge * valid) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "max_triplets": self.max_triplets,
                "seed": self.seed}


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
