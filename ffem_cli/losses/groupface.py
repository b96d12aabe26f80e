"""GroupFace (Kim et al., "GroupFace: Learning Latent Groups and Constructing
Group-based Representations for Face Recognition", CVPR 2020)."""

import keras
from keras import ops

from ffem_cli.losses.margins import ArcFace
from ffem_cli.losses.numerics import as_float32, as_labels


@keras.saving.register_keras_serializable(package="ffem")
class GroupAwareHead(keras.layers.Layer):
    """The group-aware representation ``r`` of an instance embedding ``v``.

    With ``v`` (B, D):

    - group-based representations ``g_k = FC_k(v)``, k = 1..G (one Dense D→G·D);
    - group decision network ``p(k|v) = softmax(FC(ReLU(FC(v))))`` (B, G),
      hidden width ``gdn_units``;
    - ``r = v + Σ_k p(k|v) · g_k`` (B, D), the paper's soft aggregation.

    Called as ``head(v)`` → ``r`` (float32, not normalised), so it can follow
    an embedder's head in a saved model; ``head.decide(v)`` → ``(r, p)``.
    """

    def __init__(self, embedding_size, groups=4, gdn_units=256, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.embedding_size, self.groups, self.gdn_units = (int(embedding_size), int(groups), int(gdn_units))
        self.group_projection = keras.layers.Dense(
            self.groups * self.embedding_size, dtype="float32", name="group_projection"
        )
        self.decision_hidden = keras.layers.Dense(
            self.gdn_units, activation="relu", dtype="float32", name="decision_hidden"
        )
        self.decision_logits = keras.layers.Dense(self.groups, dtype="float32", name="decision_logits")
        self.group_projection.build((None, self.embedding_size))
        self.decision_hidden.build((None, self.embedding_size))
        self.decision_logits.build((None, self.gdn_units))
        self.built = True

    def decide(self, embeddings):
        """(B, D) → (``r`` (B, D), ``p(k|v)`` (B, G)), float32."""
        instance = as_float32(embeddings)
        probabilities = ops.softmax(self.decision_logits(self.decision_hidden(instance)), axis=-1)
        group_vectors = ops.reshape(self.group_projection(instance), (-1, self.groups, self.embedding_size))
        combined = instance + ops.sum(probabilities[:, :, None] * group_vectors, axis=1)
        return combined, probabilities

    def call(self, embeddings):
        return self.decide(embeddings)[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "embedding_size": self.embedding_size,
            "groups": self.groups,
            "gdn_units": self.gdn_units,
        }


@keras.saving.register_keras_serializable(package="ffem")
class GroupFace(keras.layers.Layer):
    """ArcFace on the group-aware representation, plus the self-distributed grouping loss.

    With the embedder's output as the instance representation ``v`` (B, D)
    and ``r, p = GroupAwareHead(v)``:
    ``L = ArcFace(r̂, y) + λ · L_group``, where the self-distributed label
    is ``argmax_k [(p(k|v) − E_batch p(k|v)) / G + 1/G]`` and
    ``L_group = CE(p(·|v), label)`` spreads samples evenly over the groups.

    Inference on ``r̂``, as the paper and the FFEM seed do:
    :meth:`inference_embedder` appends the trained head to an embedder, and
    ``ffem train`` saves that model as the run's ``embedder.keras``.
    Defaults are the FFEM seed's (seed 003): G = 4 groups, decision
    network width 256, λ = 0.1, ArcFace m = 0.5, s = 60.
    """

    def __init__(
        self, num_classes, embedding_size, groups=4, group_weight=0.1, scale=60.0, margin=0.5, gdn_units=256, **kwargs
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.groups, self.group_weight = int(groups), float(group_weight)
        self.scale, self.margin, self.gdn_units = float(scale), float(margin), int(gdn_units)
        self.head = GroupAwareHead(self.embedding_size, self.groups, self.gdn_units, name="group_aware")
        self.arcface = ArcFace(
            self.num_classes, self.embedding_size, scale=self.scale, margin=self.margin, name="arcface"
        )
        self.built = True

    def inference_embedder(self, embedder):
        """``embedder`` (pixels → v̂) followed by this head and L2 normalisation (pixels → r̂)."""
        representation = self.head(embedder.output)
        unit = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="group_aware_l2_normalize")(representation)
        return keras.Model(embedder.input, unit, name=embedder.name)

    def logits(self, embeddings):
        """(B, D) → (B, C) cosines of ``r̂`` to the class weights, without margin."""
        return self.arcface.logits(self.head(embeddings))

    warmable_margin = True  # the ArcFace term's margin

    def call(self, embeddings, labels, margin_fraction=1.0):
        representation, probabilities = self.head.decide(embeddings)
        arcface_loss = self.arcface(
            representation, as_labels(labels), margin_fraction=margin_fraction
        )  # ArcFace normalises r
        balanced = (probabilities - ops.mean(probabilities, axis=0, keepdims=True)) / self.groups
        pseudo_labels = ops.stop_gradient(ops.argmax(balanced, axis=1))
        chosen = ops.take_along_axis(probabilities, pseudo_labels[:, None], axis=1)
        grouping_loss = -ops.mean(ops.log(ops.maximum(chosen, 1e-12)))
        return arcface_loss + self.group_weight * grouping_loss

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "embedding_size": self.embedding_size,
            "groups": self.groups,
            "group_weight": self.group_weight,
            "scale": self.scale,
            "margin": self.margin,
            "gdn_units": self.gdn_units,
        }
