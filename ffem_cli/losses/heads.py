"""Softmax-family classification heads: plain, L2-constrained, and normalised (NormFace).

Every head is a Keras layer called as ``head(embeddings, labels)`` →
scalar float32 mean cross-entropy, with ``embeddings`` (B, D) float (any
float dtype; cast to float32 inside) and ``labels`` (B,) or (B, 1) int
class ids in [0, num_classes). ``head.logits(embeddings)`` → (B, C) float32
logits without any margin, for accuracy.

:class:`CosineHead` is the base of every margin loss (``margins.py``): it
owns the normalised weights ``W`` (D, C), computes ``cos θ_j = x̂·Ŵ_j`` and
replaces only the target column with ``margin(cos θ_y)``. The margin's
trigonometry runs on the (B, 1) target cosines; the only float (B, C)
matrices are the cosines and the scaled logits the cross-entropy reads.
``head(embeddings, labels, margin_fraction=f)`` applies the fraction ``f`` in
[0, 1] of the margin (margin warm-up; ``f = 1`` is the paper's loss).
"""

import keras
from keras import ops

from ffem_cli.losses import partial_fc
from ffem_cli.losses.numerics import as_float32, as_labels, l2_normalize


def _float32_layer_kwargs(kwargs):
    """Losses compute in float32 whatever the global mixed-precision policy."""
    kwargs.setdefault("dtype", "float32")
    return kwargs


def cross_entropy(logits, target_logits):
    """Mean of ``logsumexp(logits_i) - logits_i[y_i]``; ``target_logits`` (B, 1) or (B,)."""
    return ops.mean(ops.logsumexp(logits, axis=1) - ops.reshape(target_logits, (-1,)))


def target_column(matrix, labels):
    """(B, C), (B,) → (B, 1): each row's entry at its label."""
    return ops.take_along_axis(matrix, labels[:, None], axis=1)


@keras.saving.register_keras_serializable(package="ffem")
class SoftmaxHead(keras.layers.Layer):
    """Softmax cross-entropy over a fully connected layer ``logits = x W + b``.

    Works on the features as given (no normalisation of x or W); with the
    embedder's unit-norm output the head must grow ``||W||`` to sharpen its
    softmax, which is why the normalised heads below add a scale.

    Args:
        num_classes: C, the number of identities.
        embedding_size: D, the embedding width.
    """

    #: Initial value of every class's bias.
    bias_initializer = "zeros"

    def __init__(self, num_classes, embedding_size, **kwargs):
        super().__init__(**_float32_layer_kwargs(kwargs))
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.kernel = self.add_weight(
            shape=(self.embedding_size, self.num_classes), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(self.num_classes,), initializer=self.bias_initializer, name="bias")
        self.built = True

    def features(self, embeddings):
        """The features the classifier reads: the float32 embeddings themselves."""
        return as_float32(embeddings)

    def logits(self, embeddings):
        """(B, D) → (B, C) float32 logits ``features · W + b``."""
        return ops.matmul(self.features(embeddings), self.kernel) + self.bias

    def call(self, embeddings, labels):
        logits = self.logits(embeddings)
        return cross_entropy(logits, target_column(logits, as_labels(labels)))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, embedding_size=self.embedding_size)
        return config


@keras.saving.register_keras_serializable(package="ffem")
class L2SoftmaxHead(SoftmaxHead):
    """L2-constrained softmax (Ranjan et al., arXiv:1703.09507, 2017).

    The features are L2-normalised and scaled to norm ``alpha`` before a plain
    fully connected softmax layer (weights and bias unconstrained):
    ``L = -log softmax(α · x/||x|| · W + b)_y``. The FFEM seed trains its
    first stage with α = 30, the default here.
    """

    def __init__(self, num_classes, embedding_size, alpha=30.0, **kwargs):
        super().__init__(num_classes, embedding_size, **kwargs)
        self.alpha = float(alpha)

    def features(self, embeddings):
        """α · x / ||x|| in float32."""
        return self.alpha * l2_normalize(as_float32(embeddings))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="ffem")
class CosineHead(keras.layers.Layer):
    """Normalised softmax, NormFace (Wang et al., ACM MM 2017): ``logits = s · cos θ_j``.

    ``cos θ_j = (x/||x||) · (W_j/||W_j||)`` with ``W`` (D, C) trainable and no
    bias. Subclasses change only :meth:`margin`, the function applied to the
    target cosine ``cos θ_y`` (B, 1) before scaling, so the loss reads
    ``L = -log( e^{s·margin(cos θ_y)} / (e^{s·margin(cos θ_y)} + Σ_{j≠y} e^{s·cos θ_j}) )``.

    Args:
        num_classes: C.
        embedding_size: D.
        scale: s, the fixed logit scale (NormFace default 20, as the
            temperature 0.05 of pytorch-metric-learning's NormalizedSoftmax).
        sample_rate: r of Partial FC (``partial_fc.py``). 1 (default): the
            full softmax over ``kernel`` (D, C). r < 1: the weights are
            ``centres`` (C, D) and each step's softmax covers a sample of
            max(⌈r·C⌉, B) classes holding the batch's own.
    """

    def __init__(self, num_classes, embedding_size, scale=20.0, sample_rate=1.0, **kwargs):
        super().__init__(**_float32_layer_kwargs(kwargs))
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.scale = float(scale)
        self.sample_rate = partial_fc.check_sample_rate(sample_rate)
        initializer = keras.initializers.RandomNormal(stddev=0.01)
        if self.sample_rate < 1.0:  # Partial FC: one centre per row, so a gather gives sparse gradients
            self.centres = self.add_weight(
                shape=(self.kernel_columns, self.embedding_size), initializer=initializer, name="centres"
            )
            self.sampler = keras.random.SeedGenerator(0)
        else:
            self.kernel = self.add_weight(
                shape=(self.embedding_size, self.kernel_columns), initializer=initializer, name="kernel"
            )
        self.built = True

    @property
    def kernel_columns(self):
        """Columns of ``W``: one class centre per class."""
        return self.num_classes

    def logits(self, embeddings):
        """(B, D) → (B, C) float32 cosines ``cos θ_j`` in [-1, 1] (no margin, no scale)."""
        features = l2_normalize(as_float32(embeddings))
        if self.sample_rate < 1.0:
            return self.class_cosines(ops.matmul(features, ops.transpose(l2_normalize(self.centres))))
        return self.class_cosines(ops.matmul(features, l2_normalize(self.kernel, axis=0)))

    def class_cosines(self, cosines):
        """Cosines to the centres (B, n·K) → to the classes (B, n); one centre per class here."""
        return cosines

    # True where ``margin`` has a margin to warm up (``margin_fraction`` changes the loss)
    warmable_margin = False

    def margin(self, cos_target, fraction=1.0):
        """The target-logit function: identity for NormFace. (B, 1) → (B, 1).

        ``fraction``: the share of the margin applied (scalar in [0, 1]).
        """
        return cos_target

    def margin_cross_entropy(self, cosines, labels, margin_fraction=1.0):
        """The loss over class cosines (B, n) with ``labels`` (B,) int32 in [0, n)."""
        target = self.margin(target_column(cosines, labels), margin_fraction)
        classes = ops.shape(cosines)[1]
        is_target = ops.equal(ops.arange(classes, dtype="int32")[None, :], labels[:, None])
        logits = self.scale * ops.where(is_target, target, cosines)
        return cross_entropy(logits, self.scale * target)

    def call(self, embeddings, labels, margin_fraction=1.0):
        labels = as_labels(labels)
        if self.sample_rate < 1.0:
            return partial_fc.sampled_loss(self, embeddings, labels, margin_fraction)
        return self.margin_cross_entropy(self.logits(embeddings), labels, margin_fraction)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            embedding_size=self.embedding_size,
            scale=self.scale,
            sample_rate=self.sample_rate,
        )
        return config
