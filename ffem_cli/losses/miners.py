"""Miners: which tuples of a batch a pair loss learns from (``keras.ops`` only).

A miner is a weightless Keras layer called as ``miner(distances, labels, margin)``
with ``distances`` (B, B) float32 from the loss's distance (smaller = more
alike), ``labels`` (B,) int32 and ``margin`` the loss's margin (used when the
miner's own ``margin`` option is None). No gradient flows through a miner:
it returns indices and masks, and the loss gathers its distances.

Two kinds of output (``miner.kind``):

- ``"triplet"``: ``(anchor, positive, negative, valid)``, each (K,) — int32
  indices and a float32 0/1 ``valid`` flag; K is fixed by B (B, B² or B³) so
  shapes stay static under ``jit``. ``valid = 0`` rows are padding.
- ``"pair"``: ``(positive_pairs, negative_pairs)``, (B, B) float32 0/1 masks
  over (anchor row, other column).

Any loss accepts either kind: ``triplets_to_pairs`` and ``pairs_to_triplets``
convert. "Violating" below means ``d(a, n) − d(a, p) < margin`` (the
triplet still has a positive hinge loss).

The seeds' MassFace miners, as read from its README and selection code and
generalised to every ordered anchor–positive pair (MassFace visits each
unordered pair once, in file order):

- ``batch-all``: every violating triplet.
- ``batch-hard``: per anchor, its farthest positive and nearest negative
  (Hermans et al. 2017; MassFace "hardest"), whether violating or not.
- ``batch-semi-hard``: per (a, p), the nearest negative with
  ``d(a,p) < d(a,n) < d(a,p) + margin`` (FaceNet, Schroff et al. 2015);
  pairs without one are dropped (no fallback to another negative).
- ``batch-random``: per (a, p), one violating negative drawn uniformly.
- ``random-negative``: per anchor, one negative drawn uniformly, violating or
  not, for each of its positives (the EE488B trainer's triplet).
- ``batch-min-min`` / ``batch-min-max``: per anchor, its nearest negative
  n* (the first "min") with, among the positives p for which (a, p, n*)
  violates, the nearest (min-min: the easiest positive that still
  violates) or the farthest (min-max: the hardest; this is batch-hard
  restricted to violating triplets). Our reading: MassFace's code takes,
  per anchor, the nearest violating negative of each positive, which is
  always the anchor's overall nearest negative, and keeps the first
  positive in file order in both strategies, so there the two select the
  same triplet; we read the second word as the positive's distance so
  that the two names differ as their names say.
- ``multi-similarity`` (Wang et al., CVPR 2019): pair miner; keeps a
  negative pair when ``S(a,n) + ε > min_p S(a,p)`` and a positive pair when
  ``S(a,p) − ε < max_n S(a,n)``, written here with ``d = 1 − S``.
"""

import keras
from keras import ops

from ffem_cli.errors import FfemError
from ffem_cli.losses.numerics import LARGE, as_float32, as_labels, identity_masks
from ffem_cli.registry import Entry, lookup

#: The margin a miner uses when neither it nor its loss states one (FaceNet's α).
DEFAULT_MARGIN = 0.2


def _flat(mask):
    return ops.cast(ops.reshape(mask, (-1,)), "float32")


def gather_distances(distances, rows, columns):
    """``distances[rows[k], columns[k]]`` for (K,) int indices → (K,) float32."""
    batch = ops.shape(distances)[0]
    return ops.take(ops.reshape(distances, (-1,)), rows * batch + columns)


def _grid(batch):
    """Index grids of a (B, B, B) cube: anchor, positive, negative, each (B, B, B) int32."""
    index = ops.arange(batch, dtype="int32")
    cube = ops.zeros((batch, batch, batch), dtype="int32")
    return index[:, None, None] + cube, index[None, :, None] + cube, index[None, None, :] + cube


def _cube_masks(distances, labels, margin):
    """(B, B, B) bool masks [a, p, n]: valid triplet, and valid + violating."""
    _, positive, negative = identity_masks(labels)
    valid = ops.logical_and(positive[:, :, None], negative[:, None, :])
    violating = ops.less(distances[:, None, :] - distances[:, :, None], margin)
    return valid, ops.logical_and(valid, violating)


def _per_pair(batch, negative_index, valid):
    """Triplets from a choice of one negative per (a, p): (B, B) indices/mask → (B²,) tuple."""
    index = ops.arange(batch, dtype="int32")
    zeros = ops.zeros((batch, batch), dtype="int32")
    return (
        ops.reshape(index[:, None] + zeros, (-1,)),
        ops.reshape(index[None, :] + zeros, (-1,)),
        ops.reshape(ops.cast(negative_index, "int32"), (-1,)),
        _flat(valid),
    )


def triplets_to_pairs(triplets, batch):
    """Triplet tuple → (positive_pairs, negative_pairs) (B, B) float32 0/1 masks (deduplicated)."""
    anchor, positive, negative, valid = triplets
    shape = (batch, batch)
    positives = ops.scatter(ops.stack([anchor, positive], axis=1), valid, shape)
    negatives = ops.scatter(ops.stack([anchor, negative], axis=1), valid, shape)
    return ops.cast(positives > 0, "float32"), ops.cast(negatives > 0, "float32")


def pairs_to_triplets(pairs):
    """(positive_pairs, negative_pairs) → every triplet (a, p, n) with both pairs kept (B³,)."""
    positives, negatives = pairs
    batch = ops.shape(positives)[0]
    anchor, positive, negative = _grid(batch)
    valid = positives[:, :, None] * negatives[:, None, :]
    return (
        ops.reshape(anchor, (-1,)),
        ops.reshape(positive, (-1,)),
        ops.reshape(negative, (-1,)),
        ops.reshape(valid, (-1,)),
    )


def all_pairs(labels):
    """No mining: every positive pair (i ≠ j) and every negative pair, (B, B) float32 masks."""
    _, positive, negative = identity_masks(as_labels(labels))
    return ops.cast(positive, "float32"), ops.cast(negative, "float32")


def all_triplets(labels):
    """No mining: every valid triplet (B³,)."""
    return pairs_to_triplets(all_pairs(labels))


class Miner(keras.layers.Layer):
    """Base miner: a weightless float32 layer; subclasses implement :meth:`mine`."""

    kind = "triplet"

    def __init__(self, margin=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.margin = None if margin is None else float(margin)

    def resolve_margin(self, loss_margin):
        """The miner's own margin, else the loss's, else :data:`DEFAULT_MARGIN`."""
        if self.margin is not None:
            return self.margin
        return DEFAULT_MARGIN if loss_margin is None else float(loss_margin)

    def call(self, distances, labels, margin=None):
        distances = ops.stop_gradient(as_float32(distances))
        return self.mine(distances, as_labels(labels), self.resolve_margin(margin))

    def mine(self, distances, labels, margin):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="ffem")
class BatchAllMiner(Miner):
    """Every violating triplet of the batch; K = B³."""

    def mine(self, distances, labels, margin):
        anchor, positive, negative = _grid(ops.shape(distances)[0])
        _, chosen = _cube_masks(distances, labels, margin)
        return (ops.reshape(anchor, (-1,)), ops.reshape(positive, (-1,)), ops.reshape(negative, (-1,)), _flat(chosen))


@keras.saving.register_keras_serializable(package="ffem")
class BatchHardMiner(Miner):
    """Per anchor, the farthest positive and the nearest negative; K = B (margin unused)."""

    def mine(self, distances, labels, margin):
        _, positive, negative = identity_masks(labels)
        hardest_positive = ops.argmax(ops.where(positive, distances, -LARGE), axis=1)
        hardest_negative = ops.argmin(ops.where(negative, distances, LARGE), axis=1)
        valid = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
        anchor = ops.arange(ops.shape(distances)[0], dtype="int32")
        return (anchor, ops.cast(hardest_positive, "int32"), ops.cast(hardest_negative, "int32"), _flat(valid))


@keras.saving.register_keras_serializable(package="ffem")
class BatchSemiHardMiner(Miner):
    """Per (a, p), the nearest negative with ``d(a,p) < d(a,n) < d(a,p) + margin``; K = B²."""

    def mine(self, distances, labels, margin):
        valid, violating = _cube_masks(distances, labels, margin)
        farther = ops.greater(distances[:, None, :], distances[:, :, None])
        candidates = ops.logical_and(violating, farther)
        negative = ops.argmin(ops.where(candidates, distances[:, None, :], LARGE), axis=2)
        return _per_pair(ops.shape(distances)[0], negative, ops.any(candidates, axis=2))


class SeededMiner(Miner):
    """A miner that draws at random.

    Args:
        seed: seeds the layer's ``keras.random.SeedGenerator`` (state saved with the model).
    """

    def __init__(self, margin=None, seed=None, **kwargs):
        super().__init__(margin=margin, **kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="ffem")
class BatchRandomMiner(SeededMiner):
    """Per (a, p), one violating negative drawn uniformly at random; K = B² (``seed``: ``SeededMiner``)."""

    def mine(self, distances, labels, margin):
        batch = ops.shape(distances)[0]
        _, candidates = _cube_masks(distances, labels, margin)
        draw = keras.random.uniform((batch, batch, batch), seed=self.seed_generator)
        negative = ops.argmax(ops.where(candidates, draw, -1.0), axis=2)
        return _per_pair(batch, negative, ops.any(candidates, axis=2))


@keras.saving.register_keras_serializable(package="ffem")
class RandomNegativeMiner(SeededMiner):
    """Per anchor, one negative drawn uniformly, violating or not, with each positive; K = B² (``seed``: ``SeededMiner``)."""

    def mine(self, distances, labels, margin):
        batch = ops.shape(distances)[0]
        _, positive, negative = identity_masks(labels)
        draw = keras.random.uniform((batch, batch), seed=self.seed_generator)
        chosen = ops.argmax(ops.where(negative, draw, -1.0), axis=1)
        valid = ops.logical_and(positive, ops.any(negative, axis=1, keepdims=True))
        chosen = ops.cast(chosen, "int32")[:, None] + ops.zeros((batch, batch), "int32")
        return _per_pair(batch, chosen, valid)


class _NearestNegativeMiner(Miner):
    """Shared by min-min / min-max: the nearest negative with one violating positive; K = B."""

    pick_farthest_positive = False

    def mine(self, distances, labels, margin):
        _, positive, negative = identity_masks(labels)
        nearest = ops.argmin(ops.where(negative, distances, LARGE), axis=1)
        nearest_distance = ops.min(ops.where(negative, distances, LARGE), axis=1, keepdims=True)
        violating = ops.logical_and(positive, nearest_distance - distances < margin)
        if self.pick_farthest_positive:
            chosen = ops.argmax(ops.where(violating, distances, -LARGE), axis=1)
        else:
            chosen = ops.argmin(ops.where(violating, distances, LARGE), axis=1)
        anchor = ops.arange(ops.shape(distances)[0], dtype="int32")
        return (anchor, ops.cast(chosen, "int32"), ops.cast(nearest, "int32"), _flat(ops.any(violating, axis=1)))


@keras.saving.register_keras_serializable(package="ffem")
class BatchMinMinMiner(_NearestNegativeMiner):
    """Per anchor, the nearest negative and the nearest positive it still violates with; K = B."""


@keras.saving.register_keras_serializable(package="ffem")
class BatchMinMaxMiner(_NearestNegativeMiner):
    """Per anchor, the nearest negative and the farthest positive, if they violate; K = B."""

    pick_farthest_positive = True


@keras.saving.register_keras_serializable(package="ffem")
class MultiSimilarityMiner(Miner):
    """Multi-similarity pair mining (Wang et al., CVPR 2019), ε = 0.1 (paper).

    Meant for cosine distance ``d = 1 − S``: keeps negative pairs with
    ``d(a,n) − ε < max_p d(a,p)`` and positive pairs with
    ``d(a,p) + ε > min_n d(a,n)``. An anchor without positives or without
    negatives keeps no pairs (there is nothing to compare against).
    """

    kind = "pair"

    def __init__(self, epsilon=0.1, **kwargs):
        kwargs.pop("margin", None)
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def mine(self, distances, labels, margin):
        _, positive, negative = identity_masks(labels)
        farthest_positive = ops.max(ops.where(positive, distances, -LARGE), axis=1, keepdims=True)
        nearest_negative = ops.min(ops.where(negative, distances, LARGE), axis=1, keepdims=True)
        keep_negative = ops.logical_and(negative, distances - self.epsilon < farthest_positive)
        keep_positive = ops.logical_and(positive, distances + self.epsilon > nearest_negative)
        return ops.cast(keep_positive, "float32"), ops.cast(keep_negative, "float32")

    def get_config(self):
        config = super().get_config()
        config.pop("margin")
        return {**config, "epsilon": self.epsilon}


#: Miner registry: name → ``registry.Entry`` (class, paper/source). ``ffem models`` lists it.
MINERS = {
    "batch-all": Entry(BatchAllMiner, "every violating triplet (MassFace; Hermans et al. 2017)"),
    "batch-hard": Entry(BatchHardMiner, "Hermans, Beyer & Leibe, arXiv:1703.07737, 2017"),
    "batch-semi-hard": Entry(BatchSemiHardMiner, "Schroff, Kalenichenko & Philbin, CVPR 2015"),
    "batch-random": Entry(BatchRandomMiner, "MassFace (Li et al.), random violating negative"),
    "random-negative": Entry(RandomNegativeMiner, "EE488B trainer, any negative drawn uniformly"),
    "batch-min-min": Entry(BatchMinMinMiner, "MassFace (Li et al.), min-and-min selection"),
    "batch-min-max": Entry(BatchMinMaxMiner, "MassFace (Li et al.), min-and-max selection"),
    "multi-similarity": Entry(MultiSimilarityMiner, "Wang et al., CVPR 2019"),
}


def build_miner(miner, **options):
    """A miner from a registry name (with ``options``), a miner layer, or None (no mining)."""
    if miner is None or isinstance(miner, Miner):
        return miner
    if isinstance(miner, dict):  # a serialized miner (a loss's get_config)
        try:
            layer = keras.saving.deserialize_keras_object(miner)
        except (TypeError, ValueError, KeyError) as exc:
            raise FfemError(f"not a serialized miner: {exc}") from None
        if not isinstance(layer, Miner):
            raise FfemError(f"not a serialized miner: {type(layer).__name__}")
        return layer
    return lookup(MINERS, miner, "miner").build(**options)
