"""Contrastive loss (Hadsell, Chopra & LeCun, CVPR 2006) with positive and negative margins."""

import keras
from keras import ops

from ffem_cli.losses.pairs import PairLoss


@keras.saving.register_keras_serializable(package="ffem")
class ContrastiveLoss(PairLoss):
    """``L = ½ mean over mined pairs of [y·max(0, d − m₊)² + (1 − y)·max(0, m₋ − d)²]``.

    y = 1 for a positive pair. Hadsell et al. is the case m₊ = 0; a
    positive margin m₊ stops pulling pairs already closer than m₊ (as in
    pytorch-metric-learning's ContrastiveLoss). Defaults: euclidean
    distance, m₊ = 0, m₋ = 1 (for unit vectors d ∈ [0, 2]); ``miner``
    None = every pair of the batch; a triplet miner contributes the
    (a, p) and (a, n) pairs of its triplets. No mined pair → loss 0.
    """

    def __init__(self, pos_margin=0.0, neg_margin=1.0, distance="euclidean", miner=None, **kwargs):
        super().__init__(distance, miner, **kwargs)
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)

    @property
    def mining_margin(self):
        return self.neg_margin - self.pos_margin

    def compute(self, embeddings, distances, labels):
        positives, negatives = self.mine_pairs(distances, labels)
        pull = ops.square(ops.relu(distances - self.pos_margin))
        push = ops.square(ops.relu(self.neg_margin - distances))
        total = ops.sum(positives * pull) + ops.sum(negatives * push)
        return 0.5 * total / ops.maximum(ops.sum(positives) + ops.sum(negatives), 1.0)

    def get_config(self):
        return {**super().get_config(), "pos_margin": self.pos_margin, "neg_margin": self.neg_margin}
