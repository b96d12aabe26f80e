"""Proxy losses: Proxy-NCA, Proxy-Anchor and SoftTriple. Each owns learnable class proxies.

Called as ``loss(embeddings, labels)`` → scalar float32; embeddings (B, D)
(normalised inside), labels (B,) int in [0, num_classes). No miner: the
proxies replace tuple sampling. ``loss.logits(embeddings)`` gives (B, C)
similarities to the class proxies for accuracy.
"""

import keras
from keras import ops

from ffem_cli.errors import FfemError
from ffem_cli.losses.heads import cross_entropy, target_column
from ffem_cli.losses.numerics import (
    as_float32,
    as_labels,
    l2_normalize,
    masked_log1p_sum_exp,
)


class ProxyLoss(keras.layers.Layer):
    """Base: ``proxies`` (D, C·K) trainable, float32 compute, shared config."""

    proxies_per_class = 1

    def __init__(self, num_classes, embedding_size, initializer="glorot_uniform", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.proxies = self.add_weight(
            shape=(self.embedding_size, self.num_classes * self.proxies_per_class),
            initializer=initializer,
            name="proxies",
        )
        self.built = True

    def cosines(self, embeddings):
        """(B, D) → (B, C·K) float32 cosine of each sample to each proxy."""
        return ops.matmul(l2_normalize(as_float32(embeddings)), l2_normalize(self.proxies, axis=0))

    def logits(self, embeddings):
        return self.cosines(embeddings)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "embedding_size": self.embedding_size}


@keras.saving.register_keras_serializable(package="ffem")
class ProxyNCA(ProxyLoss):
    """Proxy-NCA (Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies", ICCV 2017).

    With x and proxies p scaled to norm ``scale``, ``d = ||x − p||²``:
    ``L = mean_i −log( e^{−d(x_i, p_{y_i})} / Σ_{z≠y_i} e^{−d(x_i, p_z)} )``
    (the paper's NCA form: the own proxy is left out of the denominator, so
    the loss can go negative). Default scale 3, the norm the Proxy-Anchor
    authors' reproduction uses; the paper leaves the norm as a choice.
    Needs ≥ 2 classes.
    """

    def __init__(self, num_classes, embedding_size, scale=3.0, **kwargs):
        if int(num_classes) < 2:
            raise FfemError(f"proxy-nca needs at least 2 classes, got {num_classes}")
        super().__init__(num_classes, embedding_size, **kwargs)
        self.scale = float(scale)

    def call(self, embeddings, labels):
        labels = as_labels(labels)
        distances = 2.0 * self.scale**2 * (1.0 - self.cosines(embeddings))
        own = target_column(distances, labels)
        is_own = ops.equal(ops.arange(self.num_classes, dtype="int32")[None, :], labels[:, None])
        others = ops.logsumexp(ops.where(is_own, -1e9, -distances), axis=1)
        return ops.mean(ops.reshape(own, (-1,)) + others)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="ffem")
class ProxyAnchor(ProxyLoss):
    """Proxy-Anchor (Kim et al., CVPR 2020), with s(x, p) the cosine similarity:

    ``L = 1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)})
        + 1/|P| Σ_{p∈P} log(1 + Σ_{x∈X_p⁻} e^{α(s(x,p) + δ)})``

    P⁺ = proxies with a positive in the batch, X_p⁺/X_p⁻ the batch samples of
    / not of p's class. Defaults α = 32, δ = 0.1 (paper); proxies start
    He-normal as in the authors' code.
    """

    def __init__(self, num_classes, embedding_size, alpha=32.0, delta=0.1, **kwargs):
        kwargs.setdefault("initializer", "he_normal")
        super().__init__(num_classes, embedding_size, **kwargs)
        self.alpha, self.delta = float(alpha), float(delta)

    def call(self, embeddings, labels):
        labels = as_labels(labels)
        cosines = self.cosines(embeddings)
        is_own = ops.equal(ops.arange(self.num_classes, dtype="int32")[None, :], labels[:, None])
        pull = masked_log1p_sum_exp(-self.alpha * (cosines - self.delta), is_own, axis=0)
        push = masked_log1p_sum_exp(self.alpha * (cosines + self.delta), ops.logical_not(is_own), axis=0)
        with_positives = ops.cast(ops.any(is_own, axis=0), "float32")
        return ops.sum(pull) / ops.maximum(ops.sum(with_positives), 1.0) + ops.sum(push) / self.num_classes

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "delta": self.delta}


@keras.saving.register_keras_serializable(package="ffem")
class SoftTriple(ProxyLoss):
    """SoftTriple (Qian et al., "SoftTriple Loss: Deep Metric Learning Without Triplet Sampling", ICCV 2019).

    K unit-norm centres per class; the class similarity is the soft maximum
    ``S_c = Σ_k softmax_k(x·w_c^k / γ) · x·w_c^k``, and
    ``L = −log softmax(λ(S − δ·[c = y]))_y + τ · R`` with the centre-spreading
    regulariser ``R = Σ_c Σ_{t<s} sqrt(2 + 10⁻⁵ − 2 w_c^t·w_c^s) / (C·K·(K−1))``
    (0 when K = 1). Defaults λ = 20, γ = 0.1, τ = 0.2, δ = 0.01, K = 10 (paper).
    Holds a (D, C·K) matrix: K times a plain head.
    """

    def __init__(
        self, num_classes, embedding_size, la=20.0, gamma=0.1, tau=0.2, margin=0.01, centers_per_class=10, **kwargs
    ):
        self.proxies_per_class = int(centers_per_class)
        super().__init__(num_classes, embedding_size, **kwargs)
        self.la, self.gamma, self.tau, self.margin = float(la), float(gamma), float(tau), float(margin)

    def logits(self, embeddings):
        """(B, D) → (B, C) float32 soft-max similarity ``S_c`` to each class."""
        if self.proxies_per_class == 1:
            return self.cosines(embeddings)
        per_center = ops.reshape(self.cosines(embeddings), (-1, self.num_classes, self.proxies_per_class))
        weights = ops.softmax(per_center / self.gamma, axis=2)
        return ops.sum(weights * per_center, axis=2)

    def regularizer(self):
        """R: mean distance between the K centres of each class (a scalar)."""
        k = self.proxies_per_class
        if k == 1:
            return ops.zeros(())
        centers = ops.reshape(l2_normalize(self.proxies, axis=0), (self.embedding_size, -1, k))
        similarity = ops.einsum("dct,dcs->cts", centers, centers)
        upper = ops.triu(ops.ones((k, k)), 1)[None]
        distances = ops.sqrt(ops.maximum(2.0 + 1e-5 - 2.0 * similarity, 1e-12))
        return ops.sum(distances * upper) / (self.num_classes * k * (k - 1))

    def call(self, embeddings, labels):
        labels = as_labels(labels)
        similarity = self.logits(embeddings)
        is_own = ops.equal(ops.arange(self.num_classes, dtype="int32")[None, :], labels[:, None])
        logits = self.la * (similarity - self.margin * ops.cast(is_own, "float32"))
        return cross_entropy(logits, target_column(logits, labels)) + self.tau * self.regularizer()

    def get_config(self):
        return {
            **super().get_config(),
            "la": self.la,
            "gamma": self.gamma,
            "tau": self.tau,
            "margin": self.margin,
            "centers_per_class": self.proxies_per_class,
        }
