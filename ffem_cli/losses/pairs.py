"""The base of the pair losses: a distance, an optional miner, float32 inputs."""

import keras
from keras import ops

from ffem_cli.losses import miners
from ffem_cli.losses.distances import get_distance
from ffem_cli.losses.numerics import as_float32, as_labels


class PairLoss(keras.layers.Layer):
    """A loss over tuples of the batch chosen by ``miner``.

    ``loss(embeddings, labels)`` → scalar float32; embeddings (B, D) float
    (cast to float32), labels (B,) int. ``miner`` is a registry name, a
    miner layer, or None for every valid tuple. A miner of the other kind
    (pairs vs. triplets) is converted (see ``miners.py``).
    """

    def __init__(self, distance, miner=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.distance = distance
        self.distance_fn = get_distance(distance)
        self.miner = miners.build_miner(miner)

    #: The margin handed to a miner that has none of its own (None: the miner's default).
    mining_margin = None

    def mine_triplets(self, distances, labels):
        """(anchor, positive, negative, valid) (K,) from the miner, or every valid triplet."""
        if self.miner is None:
            return miners.all_triplets(labels)
        mined = self.miner(distances, labels, margin=self.mining_margin)
        return mined if self.miner.kind == "triplet" else miners.pairs_to_triplets(mined)

    def mine_pairs(self, distances, labels):
        """(positive_pairs, negative_pairs) (B, B) float32 masks, or every valid pair."""
        if self.miner is None:
            return miners.all_pairs(labels)
        mined = self.miner(distances, labels, margin=self.mining_margin)
        if self.miner.kind == "pair":
            return mined
        return miners.triplets_to_pairs(mined, ops.shape(distances)[0])

    def call(self, embeddings, labels):
        embeddings = as_float32(embeddings)
        return self.compute(embeddings, self.distance_fn(embeddings), as_labels(labels))

    def compute(self, embeddings, distances, labels):
        raise NotImplementedError

    def get_config(self):
        miner = None if self.miner is None else keras.saving.serialize_keras_object(self.miner)
        return {**super().get_config(), "distance": self.distance, "miner": miner}
