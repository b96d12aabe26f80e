"""``tf.data`` pipelines over a pack directory (``data.packdir.PackDir``: its layout and checks).

* ``train_dataset`` — ONE epoch of augmented ``(images, labels)`` batches,
  ``images`` float32 ``(B, S, S, 3)`` RGB in ``[0, 255]``, ``labels`` int32
  ``(B,)``, ``drop_remainder=True``. The epoch is a pure function of
  ``(seed, epoch)``: the example order and every augmentation draw come
  from seeds, so a resumed run rebuilds the same epoch and
  ``skip()``s to its step.

  - every epoch is a list of batches of example indices: a seeded
    permutation of the whole pack (default; the remainder is dropped) or
    identity-balanced P×K draws (``pk``). Records are sliced by byte offset
    (``index.npz``) from memory-mapped shards, a batch per Python generator
    call; one parallel map call per batch parses it, JPEG-decodes
    (and crops / colour-jitters when asked) its images in a ``map_fn``,
    mirrors the flagged ones and casts to float32; then a prefetch. The
    shuffle is exact (no shuffle buffer, no interleave).
  - parallelism is fixed (``PARALLEL_CALLS`` map calls, ``PREFETCH_BATCHES``)
    and tf.data's autotuner is off: its model thread sleeps 10 ms, 20 ms, …
    doubling to 60 s, and in TF 2.21 deleting an iterator waits for the
    sleep in progress, so an epoch whose iterator lived 41 s took 82 s
    (``bench/pipeline.py --teardown 45``).
  - ``pk=(P, K)``: each batch holds P distinct identities × K images each
    (B = P·K, in identity blocks: rows ``p*K … p*K+K-1`` share a label).
    Identities with a single image cannot give a positive pair and are left
    out; identities with 2 ≤ n < K images are sampled with replacement (so
    the same photo may appear twice, augmented differently). An epoch has
    ``eligible images // (P·K)`` batches.

* ``eval_dataset`` — ``(images, labels, paths)`` batches in file order
  (shard 0 first, i.e. ``index.npz`` order), no augmentation, last batch
  kept; read and decoded a batch at a time like the training batches.
"""

from __future__ import annotations

import dataclasses
import functools
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from ffem_cli.data.packdir import PackDir
from ffem_cli.errors import FfemError

MIN_IMAGES_PER_IDENTITY = 2
PARALLEL_CALLS = max(1, len(os.sched_getaffinity(0)))  # batch map calls in flight: one per usable core
PREFETCH_BATCHES = 2  # decoded batches waiting for the training step
AUTOTUNER = False  # tf.data's autotuner (module docstring: off, for the iterator-deletion wait)
MIRROR_STREAM = 1  # numpy seed suffix that separates the flip draws from the P×K draws


@dataclass(frozen=True)
class Augment:
    """Training augmentation, drawn independently per image.

    ``flip``: horizontal flip with probability 0.5. ``scale``: side of a
    random square crop as a fraction of the image side, uniform in
    ``[scale[0], scale[1]]``, placed uniformly and resized back (bilinear);
    ``(1, 1)`` turns it off. ``brightness``: additive offset uniform in
    ``±brightness·255``. ``contrast``/``saturation``: factor uniform in
    ``[1 - x, 1 + x]`` around the image mean / the pixel's grey value.
    ``hue``: hue rotation uniform in ``±hue`` of the colour circle
    (``tf.image.adjust_hue``). ``greyscale``: probability of replacing the
    image by its grey value (Rec. 601). ``cutout``: probability of one square
    of side ``cutout_size``·S (centre uniform over the image, clipped at its
    edges) set to 0, as ``tfa.image.random_cutout`` did for the FFEM seeds.
    Results are clipped to ``[0, 255]``. ``Augment.preset(name, options)``
    gives a named preset with any of these fields changed (``ffem train
    --augment NAME --augment-option FIELD=VALUE``).

    The default is the flip alone, as in InsightFace/ArcFace training: faces
    are already cropped (or aligned) exactly as eval and export crop them,
    and random crops shift that geometry. ``Augment.strong()`` adds crop/scale
    and colour jitter (for small or uncontrolled sets; it costs ~3x the
    decode time on CPU, see bench/pipeline.py); ``Augment.off()`` disables all.
    """

    flip: bool = True
    scale: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    greyscale: float = 0.0
    cutout: float = 0.0
    cutout_size: float = 0.0

    @classmethod
    def preset(cls, name: str, options: dict | None = None) -> Augment:
        """Preset ``flip`` | ``strong`` | ``off`` with ``options`` (field → value) over it."""
        presets = {"flip": cls, "strong": cls.strong, "off": cls.off}
        if name not in presets:
            raise FfemError(f"unknown augment {name!r}; choose one of: {', '.join(presets)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in (options or {}).items():
            if key not in fields:
                raise FfemError(f"unknown augment option {key!r}; known: {', '.join(sorted(fields))}")
            values[key] = _augment_value(key, value)
        return dataclasses.replace(presets[name](), **values)

    @classmethod
    def off(cls) -> Augment:
        """No augmentation at all."""
        return cls(flip=False)

    @classmethod
    def strong(cls) -> Augment:
        """Flip, random crop of 85-100% of the side, brightness ±15%, contrast and saturation ±20%."""
        return cls(flip=True, scale=(0.85, 1.0), brightness=0.15, contrast=0.2, saturation=0.2)


def steps_per_epoch(pack: PackDir | str | Path, batch_size: int, pk: tuple[int, int] | None = None) -> int:
    """Batches in one ``train_dataset`` epoch (``pk`` overrides ``batch_size`` with P·K)."""
    pack = PackDir.of(pack)
    if pk is not None:
        _check_pk(pk)
        _, counts = np.unique(pack.index()["label"], return_counts=True)
        return int(counts[counts >= MIN_IMAGES_PER_IDENTITY].sum() // (pk[0] * pk[1]))
    _check_batch_size(batch_size)
    return int(pack.manifest()["num_examples"] // batch_size)


def train_dataset(
    pack: PackDir | str | Path,
    batch_size: int,
    *,
    epoch: int,
    seed: int,
    augment: Augment | bool | None = True,
    pk: tuple[int, int] | None = None,
    start_step: int = 0,
) -> tf.data.Dataset:
    """One deterministic epoch of augmented training batches (module docstring).

    ``start_step``: begin at that batch of the epoch (a resumed run); the
    batches are exactly those of ``train_dataset(...).skip(start_step)``,
    without reading or decoding the ones before it.
    """
    pack = PackDir.of(pack)
    manifest = pack.manifest()
    augment = _as_augment(augment)
    size = int(manifest["image_size"])
    epoch_seed = _epoch_seed(seed, epoch)
    index = pack.index()
    if pk is not None:
        order = pk_batches(index["label"], pk, seed, epoch)
        batch_size = pk[0] * pk[1]
    else:
        _check_batch_size(batch_size)
        if manifest["num_examples"] < batch_size:
            raise FfemError(f"{pack}: {manifest['num_examples']} images cannot fill one batch of {batch_size}")
        order = _shuffled_batches(len(index["label"]), batch_size, epoch_seed)
    steps = len(order)
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step {start_step} is outside the epoch's {steps} steps")
    # One map call per batch: parse, decode (+ crop/colour) each JPEG in a
    # map_fn, mirror the flagged images, cast to float32. The flip's coin tosses
    # come from (seed, epoch) in numpy; per-image draws are keyed by position.
    mirror = _mirror_draws(epoch_seed, steps, batch_size, augment.flip)
    batches = tf.data.Dataset.zip(
        _indexed_records(pack.shard_paths, index, order[start_step:]),
        tf.data.Dataset.from_tensor_slices(mirror[start_step:]),
    )
    decode = _train_batch_decoder(augment, size)
    seed_tensor = tf.constant(epoch_seed, tf.int64)
    batches = batches.enumerate(start=start_step).map(
        lambda step, batch: decode(*batch, step, seed_tensor),
        num_parallel_calls=PARALLEL_CALLS,
        deterministic=True,
    )
    return _prefetched(batches)


def eval_dataset(pack: PackDir | str | Path, batch_size: int) -> tf.data.Dataset:
    """``(images float32 (B,S,S,3) in [0,255], labels int32 (B,), paths string (B,))`` in file order."""
    pack = PackDir.of(pack)
    manifest = pack.manifest()
    _check_batch_size(batch_size)
    index = pack.index()
    count = len(index["label"])
    batches = [np.arange(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    dataset = _indexed_records(pack.shard_paths, index, batches)
    decode = _eval_batch_decoder(int(manifest["image_size"]))
    return _prefetched(dataset.map(decode, num_parallel_calls=PARALLEL_CALLS, deterministic=True))


def _prefetched(batches: tf.data.Dataset) -> tf.data.Dataset:
    """``batches`` prefetched ``PREFETCH_BATCHES`` ahead, with tf.data's autotuner set to ``AUTOTUNER``
    (off: module docstring; its model thread delays an iterator's deletion to the end of its sleep)."""
    options = tf.data.Options()
    options.autotune.enabled = AUTOTUNER
    return batches.prefetch(PREFETCH_BATCHES).with_options(options)


# ---------------------------------------------------------------- record sources


def _shuffled_batches(count: int, batch_size: int, epoch_seed: tuple[int, int]) -> np.ndarray:
    """Example indices for one epoch: int64 ``(count // B, B)``, a seeded permutation of all."""
    order = np.random.default_rng(epoch_seed).permutation(count)
    steps = count // batch_size
    return order[: steps * batch_size].reshape(steps, batch_size)


def pk_batches(labels: np.ndarray, pk: tuple[int, int], seed: int, epoch: int) -> np.ndarray:
    """Example indices for one P×K epoch: int64 ``(steps, P*K)``, identity blocks of K.

    ``labels``: int ``(N,)``, the label of each example in index order.
    Identities are visited in rounds of random permutations (P at a time, so
    a batch never repeats one); each block draws K of the identity's images,
    all different when it has at least K (rejection sampling), with
    replacement otherwise. Vectorised: ~0.1 s for 500k images.
    """
    _check_pk(pk)
    people, per_person = pk
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    eligible = np.flatnonzero(counts >= MIN_IMAGES_PER_IDENTITY)
    if len(eligible) < people:
        raise FfemError(
            f"P×K batches need {people} identities with at least {MIN_IMAGES_PER_IDENTITY} images; "
            f"the pack has {len(eligible)}"
        )
    members = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    steps = int(counts[eligible].sum() // (people * per_person))
    rng = np.random.default_rng(_epoch_seed(seed, epoch))
    per_round = len(eligible) // people
    rounds = -(-steps // per_round)
    identities = np.concatenate([rng.permutation(eligible)[: per_round * people] for _ in range(rounds)])[
        : steps * people
    ].reshape(steps, people)
    sizes = counts[identities][..., None]  # (steps, P, 1)
    picks = np.floor(rng.random((steps, people, per_person)) * sizes).astype(np.int64)
    redo = _repeated(picks) & (sizes[..., 0] >= per_person)
    while redo.any():
        picks[redo] = np.floor(rng.random((int(redo.sum()), per_person)) * sizes[redo]).astype(np.int64)
        redo = _repeated(picks) & (sizes[..., 0] >= per_person)
    return members[starts[identities][..., None] + picks].reshape(steps, people * per_person)


def _repeated(picks: np.ndarray) -> np.ndarray:
    """True where a block ``picks[..., :]`` holds the same value twice."""
    ordered = np.sort(picks, axis=-1)
    return (np.diff(ordered, axis=-1) == 0).any(axis=-1)


def _indexed_records(files: list[Path], index: dict, order):
    """Serialized records ``(B,)``, one batch per element: ``order`` is a sequence of int arrays
    (example indices in ``index.npz``), e.g. ``(steps, B)``.

    Each record is sliced by byte offset (``index.npz``) from its memory-mapped
    shard, so the epoch's order is exact and costs no shuffle buffer; the
    Python generator runs once per batch, not per image.
    """
    shard, offset, length = ([index[key][rows].tolist() for rows in order] for key in ("shard", "offset", "length"))

    def generate():
        maps = {}
        try:
            for batch in zip(shard, offset, length, strict=True):
                for s in set(batch[0]) - maps.keys():
                    with open(files[s], "rb") as handle:
                        maps[s] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                yield [maps[s][o : o + n] for s, o, n in zip(*batch, strict=True)]
        finally:
            for view in maps.values():
                view.close()

    return tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec((None,), tf.string))


# ---------------------------------------------------------------- parse and augment

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/label": tf.io.FixedLenFeature([], tf.int64),
    "image/path": tf.io.FixedLenFeature([], tf.string),
}
_TRAIN_FEATURES = {key: _FEATURES[key] for key in ("image/encoded", "image/label")}


# Whole batches per map call (one parse_example, the JPEGs decoded in a
# map_fn, one flip and one cast): measured on fresh epochs (bench/pipeline.py),
# this costs ~10% less CPU per image than unbatching records into a per-image
# map and batching again. Images stay uint8 until the cast (a quarter of the
# bytes to copy); the flip is a whole-batch op (a per-image tf.cond was no cheaper).


def _needs_position(augment: Augment) -> bool:
    """Whether per-image draws (crop, colour) are needed, keyed by position in the epoch."""
    return augment.scale != (1.0, 1.0) or bool(
        augment.brightness or augment.contrast or augment.saturation or _more_draws(augment)
    )


def _more_draws(augment: Augment) -> bool:
    """Whether hue, greyscale or cutout are on (they draw from their own keys)."""
    return bool(augment.hue or augment.greyscale or (augment.cutout and augment.cutout_size))


@functools.cache
def _train_batch_decoder(augment: Augment, size: int):
    """Traced once per (augment, size): a batch's records → ``(float32 (B, S, S, 3), int32 (B,))``.

    Arguments: serialized records ``(B,)``, mirror flags bool ``(B,)``, the
    batch's step in the epoch and the epoch seed int64 ``(2,)``; per-image
    draws (crop, colour) are keyed by position ``step * B + i``.
    """
    image_spec = tf.TensorSpec((size, size, 3), tf.uint8)

    def decode(records, mirror, step, seed):
        example = tf.io.parse_example(records, _TRAIN_FEATURES)
        encoded, labels = example["image/encoded"], tf.cast(example["image/label"], tf.int32)
        if _needs_position(augment):
            count = tf.shape(records, out_type=tf.int64)[0]
            positions = step * count + tf.range(count)
            images = tf.map_fn(
                lambda item: _decode_augment(item[0], item[1], seed, augment, size),
                (encoded, positions),
                fn_output_signature=image_spec,
            )
        else:
            images = tf.map_fn(
                lambda jpeg: tf.ensure_shape(tf.io.decode_jpeg(jpeg, channels=3), image_spec.shape),
                encoded,
                fn_output_signature=image_spec,
            )
        return _mirror_and_cast(images, labels, mirror, size)

    signature = [
        tf.TensorSpec([None], tf.string),
        tf.TensorSpec([None], tf.bool),
        tf.TensorSpec([], tf.int64),
        tf.TensorSpec([2], tf.int64),
    ]
    return tf.function(decode, input_signature=signature)


def _mirror_draws(epoch_seed: tuple[int, int], steps: int, batch_size: int, flip: bool):
    """bool ``(steps, B)``: which images of each batch are mirrored (p = 0.5; none if not ``flip``)."""
    if not flip:
        return np.zeros((steps, batch_size), bool)
    rng = np.random.default_rng([*epoch_seed, MIRROR_STREAM])
    return rng.random((steps, batch_size)) < 0.5


def _mirror_and_cast(images, labels, mirror, size: int):
    """``(uint8 (B, S, S, 3), int32 (B,), bool (B,))`` → float32 images, mirrored where flagged.

    The mirrored images are split off (``dynamic_partition``), reversed as
    ``(rows, S, 3)`` (a rank-3 reverse; rank 4 or ``tf.where`` is several
    times slower on CPU), stitched back in place and cast once.
    """
    which = tf.cast(mirror, tf.int32)
    kept, mirrored = tf.dynamic_partition(images, which, 2)
    kept_at, mirrored_at = tf.dynamic_partition(tf.range(tf.shape(images)[0]), which, 2)
    rows = tf.reverse(tf.reshape(mirrored, (-1, size, 3)), axis=[1])
    mirrored = tf.reshape(rows, tf.shape(mirrored))
    images = tf.dynamic_stitch([kept_at, mirrored_at], [kept, mirrored])
    return tf.cast(images, tf.float32), labels


@functools.cache
def _eval_batch_decoder(size: int):
    """Serialized records ``(B,)`` → ``(float32 (B, S, S, 3), int32 (B,), string paths (B,))``."""
    image_spec = tf.TensorSpec((size, size, 3), tf.uint8)

    def decode(records):
        example = tf.io.parse_example(records, _FEATURES)
        images = tf.map_fn(
            lambda jpeg: tf.ensure_shape(tf.io.decode_jpeg(jpeg, channels=3), image_spec.shape),
            example["image/encoded"],
            fn_output_signature=image_spec,
        )
        labels = tf.cast(example["image/label"], tf.int32)
        return tf.cast(images, tf.float32), labels, example["image/path"]

    return tf.function(decode, input_signature=[tf.TensorSpec([None], tf.string)])


def _decode_augment(encoded, position: tf.Tensor, seed: tf.Tensor, augment: Augment, size: int):
    """Decode, crop and/or colour-jitter one JPEG → uint8 ``(S, S, 3)`` (``_needs_position``).

    Every draw is seeded by (epoch seed, position in the epoch), so the result
    does not depend on thread scheduling. The random crop is decoded directly
    from the JPEG (``decode_and_crop_jpeg`` skips the rest) and resized back
    (bilinear); saturation, contrast and brightness are one elementwise colour
    map (the flip is done per batch, ``_mirror_and_cast``). Resampled or jittered
    pixels are rounded back to uint8 (the source is an 8-bit JPEG anyway).
    """
    keys = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, position), num=3)
    low, high = augment.scale
    crop = low < 1.0 or high < 1.0
    if crop:
        fraction = tf.random.stateless_uniform([], keys[0], low, high)
        side = tf.clip_by_value(tf.cast(tf.round(fraction * size), tf.int32), 1, size)
        corner = tf.random.stateless_uniform([2], keys[1], 0.0, 1.0)
        corner = tf.cast(corner * tf.cast(size - side + 1, tf.float32), tf.int32)
        window = tf.stack([corner[0], corner[1], side, side])
        image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
    else:
        image = tf.io.decode_jpeg(encoded, channels=3)
    image = tf.cast(image, tf.float32)
    if crop:
        image = tf.image.resize(image, (size, size), method="bilinear")
    if augment.brightness or augment.contrast or augment.saturation:
        jitter = tf.random.stateless_uniform([3], keys[2], -1.0, 1.0)
        image = _colour_jitter(image, jitter, augment)
    if _more_draws(augment):
        image = _hue_grey_cutout(image, keys[2], augment, size)
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
    return tf.ensure_shape(image, (size, size, 3))


def _colour_jitter(image: tf.Tensor, jitter: tf.Tensor, augment: Augment) -> tf.Tensor:
    """Saturation (around the pixel's grey), contrast (around the image mean), brightness.

    ``image`` float32 ``(H, W, 3)``; ``jitter`` uniform ``(3,)`` in ``[-1, 1]``.
    With g the pixel's grey value (Rec. 601 weights), x' = s x + (1 - s) g, then
    x'' = c x' + (1 - c) mean(x') + brightness offset, clipped to [0, 255] —
    written as one elementwise expression (a 3x3 matmul per pixel is slower).
    """
    offset = jitter[0] * (augment.brightness * 255.0)
    contrast = 1.0 + jitter[1] * augment.contrast
    saturation = 1.0 + jitter[2] * augment.saturation
    grey = image[..., 0:1] * 0.299 + image[..., 1:2] * 0.587 + image[..., 2:3] * 0.114
    mean_after_mix = saturation * tf.reduce_mean(image) + (1.0 - saturation) * tf.reduce_mean(grey)
    bias = (1.0 - contrast) * mean_after_mix + offset
    mixed = (contrast * saturation) * image + (contrast * (1.0 - saturation)) * grey + bias
    return tf.clip_by_value(mixed, 0.0, 255.0)


def _hue_grey_cutout(image: tf.Tensor, key: tf.Tensor, augment: Augment, size: int) -> tf.Tensor:
    """Hue rotation, greyscale and cutout of a float32 ``(S, S, 3)`` image in ``[0, 255]``.

    Their draws come from keys split off ``key`` (the colour jitter's), so
    the crop and jitter draws of a given position stay what they were.
    """
    keys = tf.random.experimental.stateless_split(key, num=3)
    hue_key, grey_key, cut_key = keys[0], keys[1], keys[2]
    if augment.hue:
        delta = tf.random.stateless_uniform([], hue_key, -augment.hue, augment.hue)
        image = tf.image.adjust_hue(tf.clip_by_value(image, 0.0, 255.0) / 255.0, delta) * 255.0
    if augment.greyscale:
        grey = image[..., 0:1] * 0.299 + image[..., 1:2] * 0.587 + image[..., 2:3] * 0.114
        turn = tf.random.stateless_uniform([], grey_key) < augment.greyscale
        image = tf.where(turn, tf.tile(grey, [1, 1, 3]), image)
    if augment.cutout and augment.cutout_size:
        draws = tf.random.stateless_uniform([3], cut_key)
        half = augment.cutout_size * size / 2.0
        centre = draws[1:] * size
        grid = tf.range(size, dtype=tf.float32) + 0.5
        rows = tf.abs(grid - centre[0]) < half
        columns = tf.abs(grid - centre[1]) < half
        square = tf.logical_and(rows[:, None], columns[None, :])[..., None]
        image = tf.where(tf.logical_and(square, draws[0] < augment.cutout), 0.0, image)
    return image


# ---------------------------------------------------------------- helpers


def _augment_value(key: str, value):
    """An ``Augment`` option checked: ``scale`` two fractions in (0, 1], ``flip`` a bool,
    the probabilities and sizes in [0, 1], the jitter strengths non-negative."""
    if key == "flip":
        if not isinstance(value, bool):
            raise FfemError(f"augment option flip must be true or false, got {value!r}")
        return value
    if key == "scale":
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, (int, float)) and 0 < v <= 1 for v in value)
            or value[0] > value[1]
        ):
            raise FfemError(f"augment option scale must be [low, high] with 0 < low <= high <= 1, got {value!r}")
        return (float(value[0]), float(value[1]))
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise FfemError(f"augment option {key} must be a non-negative number, got {value!r}")
    bounded = key in ("hue", "greyscale", "cutout", "cutout_size")
    if bounded and value > (0.5 if key == "hue" else 1.0):
        raise FfemError(f"augment option {key} must be at most {0.5 if key == 'hue' else 1}, got {value!r}")
    return float(value)


def _as_augment(augment: Augment | bool | None) -> Augment:
    if isinstance(augment, Augment):
        return augment
    return Augment() if augment else Augment.off()


def _epoch_seed(seed: int, epoch: int) -> tuple[int, int]:
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, np.uint32)
    return int(state[0]), int(state[1])


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise FfemError(f"batch size must be at least 1, got {batch_size}")


def _check_pk(pk) -> None:
    if len(pk) != 2 or pk[0] < 1 or pk[1] < 1:
        raise FfemError(f"P×K must be two positive integers, got {pk}")
