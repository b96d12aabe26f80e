"""Multi-similarity loss (Wang et al., "Multi-Similarity Loss with General Pair
Weighting for Deep Metric Learning", CVPR 2019)."""

import keras
from keras import ops

from ffem_cli.losses.numerics import masked_log1p_sum_exp
from ffem_cli.losses.pairs import PairLoss


@keras.saving.register_keras_serializable(package="ffem")
class MultiSimilarityLoss(PairLoss):
    """``L = mean_i [ 1/α log(1 + Σ_{p∈P_i} e^{−α(S_ip − λ)}) + 1/β log(1 + Σ_{n∈N_i} e^{β(S_in − λ)}) ]``.

    S is the cosine similarity (the distance is fixed to ``cosine``, S = 1 − d);
    P_i, N_i the pairs of anchor i kept by the miner (default
    ``multi-similarity``, ε = 0.1). Defaults α = 2, β = 50, λ = 1 as in the
    paper's text (its released code and pytorch-metric-learning use λ = 0.5).
    An anchor with no kept pair adds log 1 = 0, so an empty mining gives 0.
    """

    def __init__(self, alpha=2.0, beta=50.0, base=1.0, miner="multi-similarity", **kwargs):
        kwargs.pop("distance", None)
        super().__init__("cosine", miner, **kwargs)
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)

    def compute(self, embeddings, distances, labels):
        positives, negatives = self.mine_pairs(distances, labels)
        similarity = 1.0 - distances
        pull = masked_log1p_sum_exp(-self.alpha * (similarity - self.base), positives > 0)
        push = masked_log1p_sum_exp(self.beta * (similarity - self.base), negatives > 0)
        return ops.mean(pull / self.alpha + push / self.beta)

    def get_config(self):
        config = super().get_config()
        config.pop("distance")
        return {**config, "alpha": self.alpha, "beta": self.beta, "base": self.base}
