"""GroupFace (Kim et al., "GroupFace: Learning Latent Groups and Constructing
Group-based Representations for Face Recognition", CVPR 2020)."""

import keras
from keras import ops

from ffem_cli.losses.margins import ArcFace
from ffem_cli.losses.numerics import as_float32, as_labels, l2_normalize


@keras.saving.register_keras_serializable(package="ffem")
class GroupFace(keras.layers.Layer):
    """ArcFace on a group-aware representation, plus the self-distributed grouping loss.

    With the embedder's output as the instance representation ``v`` (B, D):

    - group-based representations ``g_k = FC_k(v)``, k = 1..G (one Dense D→G·D);
    - group decision network ``p(k|v) = softmax(FC(ReLU(FC(v))))`` (B, G);
    - group-aware representation ``r = v + Σ_k p(k|v) · g_k`` (soft aggregation);
    - ``L = ArcFace(r̂, y) + λ · L_group``, where the self-distributed label
      is ``argmax_k [(p(k|v) − E_batch p(k|v)) / G + 1/G]`` and
      ``L_group = CE(p(·|v), label)`` spreads samples evenly over the groups.

    Inference: the paper embeds with ``r``. ffem's embedder stays the plain
    backbone + pooling network, so evaluation and export use ``v``; the
    group branches act as a training-time head, and :meth:`representation`
    gives ``r`` (unit norm) for anyone who keeps the head. Defaults G = 32,
    λ = 0.1 (paper), ArcFace m = 0.5, s = 64, GDN hidden width 256.
    """

    def __init__(self, num_classes, embedding_size, groups=32, group_weight=0.1, scale=64.0,
                 margin=0.5, gdn_units=256, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.groups, self.group_weight = int(groups), float(group_weight)
        self.scale, self.margin, self.gdn_units = float(scale), float(margin), int(gdn_units)
        self.group_projection = keras.layers.Dense(self.groups * self.embedding_size,
                                                   dtype="float32", name="group_projection")
        self.decision_hidden = keras.layers.Dense(self.gdn_units, activation="relu",
                                                  dtype="float32", name="decision_hidden")
        self.decision_logits = keras.layers.Dense(self.groups, dtype="float32",
                                                  name="decision_logits")
        self.arcface = ArcFace(self.num_classes, self.embedding_size, scale=self.scale,
                               margin=self.margin, name="arcface")
        self.group_projection.build((None, self.embedding_size))
        self.decision_hidden.build((None, self.embedding_size))
        self.decision_logits.build((None, self.gdn_units))
        self.built = True

    def group_probabilities(self, embeddings):
        """(B, D) → (B, G) float32 ``p(k|v)`` of the group decision network."""
        hidden = self.decision_hidden(as_float32(embeddings))
        return ops.softmax(self.decision_logits(hidden), axis=-1)

    def _aggregate(self, embeddings):
        instance = as_float32(embeddings)
        probabilities = self.group_probabilities(instance)
        group_vectors = ops.reshape(self.group_projection(instance),
                                    (-1, self.groups, self.embedding_size))
        combined = instance + ops.sum(probabilities[:, :, None] * group_vectors, axis=1)
        return combined, probabilities

    def representation(self, embeddings):
        """(B, D) → (B, D) unit-norm group-aware representation ``r̂`` (the paper's embedding)."""
        return l2_normalize(self._aggregate(embeddings)[0])

    def logits(self, embeddings):
        """(B, D) → (B, C) cosines of ``r̂`` to the class weights, without margin."""
        return self.arcface.logits(self._aggregate(embeddings)[0])

    warmable_margin = True  # the ArcFace term's margin

    def call(self, embeddings, labels, margin_fraction=1.0):
        representation, probabilities = self._aggregate(embeddings)
        arcface_loss = self.arcface(representation, as_labels(labels), margin_fraction=margin_fraction)
        balanced = (probabilities - ops.mean(probabilities, axis=0, keepdims=True)) / self.groups
        pseudo_labels = ops.stop_gradient(ops.argmax(balanced, axis=1))
        chosen = ops.take_along_axis(probabilities, pseudo_labels[:, None], axis=1)
        grouping_loss = -ops.mean(ops.log(ops.maximum(chosen, 1e-12)))
        return arcface_loss + self.group_weight * grouping_loss

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "embedding_size": self.embedding_size, "groups": self.groups,
                "group_weight": self.group_weight, "scale": self.scale, "margin": self.margin,
                "gdn_units": self.gdn_units}
