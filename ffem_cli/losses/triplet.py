"""Triplet loss (Schroff et al., FaceNet, CVPR 2015) over any miner's triplets."""

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

    When the miner keeps no triplet (one identity in the batch, or nothing
    violates the margin) the loss is exactly 0 with zero gradients.
    """

    def __init__(self, margin=0.2, distance="squared-euclidean", miner="batch-hard", **kwargs):
        super().__init__(distance, miner, **kwargs)
        self.margin = float(margin)

    @property
    def mining_margin(self):
        return self.margin

    def compute(self, embeddings, distances, labels):
        anchor, positive, negative, valid = self.mine_triplets(distances, labels)
        hinge = ops.relu(gather_distances(distances, anchor, positive)
                         - gather_distances(distances, anchor, negative) + self.margin)
        return ops.sum(hinge * valid) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
