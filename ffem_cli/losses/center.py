"""Softmax + center loss (Wen et al., "A Discriminative Feature Learning Approach
for Deep Face Recognition", ECCV 2016), in two forms:

- ``softmax-center``: the FFEM seed's (seed 003) form, L2-softmax with learned
  centres on the unit sphere (:class:`L2SoftmaxCenterLoss`);
- ``softmax-center-wen``: the paper's form, plain softmax with centres moved by
  the update rule (:class:`SoftmaxCenterLoss`).
"""

import keras
from keras import ops

from ffem_cli.losses.heads import SoftmaxHead, cross_entropy, target_column
from ffem_cli.losses.numerics import as_float32, as_labels, l2_normalize


@keras.saving.register_keras_serializable(package="ffem")
class SoftmaxCenterLoss(SoftmaxHead):
    """``L = L_softmax + λ · ½ mean_i ||x_i − c_{y_i}||²`` with class centres c (C, D).

    The softmax part is :class:`SoftmaxHead` on the features as given. The
    centres are a non-trainable weight (no gradient reaches them); on each
    call with ``training=True`` they move toward their samples by the
    paper's rule ``c_j ← c_j − α · Σ_{i: y_i=j} (c_j − x_i) / (1 + n_j)``,
    computed from the centres before the update (the loss uses those too).
    Defaults λ = 0.003 and α = 0.5 (the paper's face experiments).
    """

    def __init__(self, num_classes, embedding_size, center_weight=0.003, center_rate=0.5, **kwargs):
        super().__init__(num_classes, embedding_size, **kwargs)
        self.center_weight = float(center_weight)
        self.center_rate = float(center_rate)
        self.centers = self.add_weight(
            shape=(self.num_classes, self.embedding_size), initializer="zeros", trainable=False, name="centers"
        )

    def call(self, embeddings, labels, training=None):
        features, labels = self.features(embeddings), as_labels(labels)
        logits = ops.matmul(features, self.kernel) + self.bias
        softmax_loss = cross_entropy(logits, target_column(logits, labels))
        own_centers = ops.take(ops.convert_to_tensor(self.centers), labels, axis=0)
        center_loss = 0.5 * ops.mean(ops.sum(ops.square(features - own_centers), axis=1))
        if training:
            self.update_centers(ops.stop_gradient(features), labels, own_centers)
        return softmax_loss + self.center_weight * center_loss

    def update_centers(self, features, labels, own_centers):
        """Wen et al.'s eq. 4: each centre steps by α toward the mean of its batch samples."""
        pull = ops.segment_sum(own_centers - features, labels, num_segments=self.num_classes)
        counts = ops.segment_sum(ops.ones_like(features[:, :1]), labels, num_segments=self.num_classes)
        self.centers.assign(self.centers - self.center_rate * pull / (1.0 + counts))

    def get_config(self):
        return {**super().get_config(), "center_weight": self.center_weight, "center_rate": self.center_rate}


@keras.saving.register_keras_serializable(package="ffem")
class L2SoftmaxCenterLoss(SoftmaxHead):
    """The FFEM seed's SoftmaxCenter: L2-softmax plus a center loss on the unit sphere.

    With x̂ = x/||x||, Ŵ_j = W_j/||W_j|| and ĉ_j = c_j/||c_j||:

    ``L = CE(s · x̂ Ŵ + b, y) + λ · mean_i s · ||x̂_i − ĉ_{y_i}||²``

    - the classifier is the seed's L2-softmax: features scaled to norm s,
      unit-norm class weights, a bias that starts at 0.1;
    - the centres c (C, D) are ordinary trainable weights (He-normal start),
      learned by gradient with the rest, and compared after normalisation;
      the squared distance is scaled by the same s.

    Defaults s = 30, λ = 1e-3 (seed 003's ``SoftmaxCenterModel``).
    """

    bias_initializer = keras.initializers.Constant(0.1)

    def __init__(self, num_classes, embedding_size, scale=30.0, center_weight=1e-3, **kwargs):
        super().__init__(num_classes, embedding_size, **kwargs)
        self.scale = float(scale)
        self.center_weight = float(center_weight)
        self.centers = self.add_weight(
            shape=(self.num_classes, self.embedding_size), initializer="he_normal", name="centers"
        )

    def features(self, embeddings):
        """s · x̂ in float32."""
        return self.scale * l2_normalize(as_float32(embeddings))

    def logits(self, embeddings):
        """(B, D) → (B, C) float32 ``s · x̂ Ŵ + b``."""
        return ops.matmul(self.features(embeddings), l2_normalize(self.kernel, axis=0)) + self.bias

    def call(self, embeddings, labels):
        labels = as_labels(labels)
        logits = self.logits(embeddings)
        softmax_loss = cross_entropy(logits, target_column(logits, labels))
        own_centers = ops.take(l2_normalize(self.centers), labels, axis=0)
        distances = ops.sum(ops.square(l2_normalize(as_float32(embeddings)) - own_centers), axis=1)
        return softmax_loss + self.center_weight * self.scale * ops.mean(distances)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "center_weight": self.center_weight}
