"""Partial FC (``losses/partial_fc.py``) on every margin head, and the head optimizer's sparse rows."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ffem_cli.errors import FfemError
from ffem_cli.losses import build_loss
from ffem_cli.losses.partial_fc import sample_classes, sampled_count
from ffem_cli.train.head_optimizer import with_head_settings
from ffem_cli.train.model import build_optimizer

MARGIN_HEADS = ["normface", "cosface", "arcface", "combined-margin", "subcenter-arcface"]
C, D, B = 40, 16, 8


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=(B, D)).astype("float32")), tf.constant(rng.integers(0, C, B).astype("int32")))


@pytest.mark.parametrize("name", MARGIN_HEADS)
def test_every_class_sampled_equals_the_full_head(name):
    """ceil(0.99·40) = 40: the sampled softmax covers all classes, in another order: same loss and
    gradients as today's head (sample_rate 1) holding the same centres."""
    full = build_loss(name, C, D)
    sampled = build_loss(name, C, D, sample_rate=0.99)
    embeddings, labels = batch()
    sampled.centres.assign(tf.transpose(full.kernel))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(embeddings)
        full_loss, sampled_loss = full(embeddings, labels), sampled(embeddings, labels)
    np.testing.assert_allclose(sampled_loss.numpy(), full_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        tape.gradient(sampled_loss, embeddings), tape.gradient(full_loss, embeddings), rtol=1e-4, atol=1e-5
    )
    centre_gradient = tf.convert_to_tensor(tape.gradient(sampled_loss, sampled.centres))
    np.testing.assert_allclose(
        centre_gradient, tf.transpose(tape.gradient(full_loss, full.kernel)), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("name", MARGIN_HEADS)
def test_a_sample_holds_the_batch_classes_and_its_loss_is_the_margin_softmax_over_it(name):
    head = build_loss(name, C, D, sample_rate=0.25)
    embeddings, labels = batch(1)
    with tf.GradientTape() as tape:
        loss = head(embeddings, labels)
    gradient = tape.gradient(loss, head.centres)
    assert isinstance(gradient, tf.IndexedSlices)  # k rows (× sub-centres), not a (C, D) matrix
    per_class = head.kernel_columns // C
    rows = np.unique(gradient.indices.numpy())
    classes = np.unique(rows // per_class)
    assert len(classes) == sampled_count(C, 0.25, B) == 10 and set(labels.numpy()) <= set(classes)
    # the same loss from the full head restricted to those classes (the sampler is replayed)
    full = build_loss(name, C, D)
    full.kernel.assign(tf.transpose(head.centres))
    cosines = np.asarray(full.logits(embeddings))[:, classes]
    local = np.searchsorted(classes, labels.numpy())
    expected = head.margin_cross_entropy(tf.constant(cosines), tf.constant(local, tf.int32))
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-5)


def test_sampling_is_uniform_over_the_negatives():
    positives = tf.constant([0, 1, 2], tf.int32)
    seed = __import__("keras").random.SeedGenerator(7)
    counts = np.zeros(20)
    for _ in range(400):
        counts[sample_classes(positives, 20, 6, seed).numpy()] += 1
    assert (counts[:3] == 400).all()
    negatives = counts[3:] / 400  # 3 of 17 each time
    assert negatives.mean() == pytest.approx(3 / 17) and negatives.min() > 0.1 and negatives.max() < 0.27


def test_sample_rate_only_on_margin_heads_and_in_range():
    with pytest.raises(FfemError, match="no option 'sample_rate'"):
        build_loss("softmax", C, D, sample_rate=0.5)
    with pytest.raises(FfemError, match=r"sample rate must be in \(0, 1\]"):
        build_loss("arcface", C, D, sample_rate=1.5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_only_the_sampled_rows_and_their_slots_move(optimizer):
    head = build_loss("arcface", C, D, sample_rate=0.25)
    opt = build_optimizer(optimizer, 0.1, weight_decay=0.01 if optimizer == "adamw" else 0.0)
    with_head_settings(opt, head.trainable_variables, lr_mult=2.0, weight_decay=0.05)
    opt.build(head.trainable_variables)
    before = head.centres.numpy().copy()
    touched = set()
    for seed in range(2):
        embeddings, labels = batch(seed)
        with tf.GradientTape() as tape:
            loss = head(embeddings, labels)
        gradient = tape.gradient(loss, head.centres)
        touched |= set(gradient.indices.numpy())
        opt.apply([gradient], [head.centres])
    after = head.centres.numpy()
    moved = set(np.flatnonzero(np.abs(after - before).max(axis=1) > 0))
    assert moved == touched and len(touched) < C
    for slot in opt.variables:
        if tuple(slot.shape) == (C, D):
            assert set(np.flatnonzero(np.abs(slot.numpy()).max(axis=1) > 0)) <= touched


def test_head_learning_rate_multiplier_and_weight_decay():
    """Plain SGD: the head's step is lr·mult·(g + wd·w); other variables keep lr·g."""
    head = build_loss("arcface", C, D)
    other = tf.Variable(np.ones((3,), "float32"))
    opt = build_optimizer("sgd", 0.1, momentum=0.0)
    with_head_settings(opt, head.trainable_variables, lr_mult=3.0, weight_decay=0.5)
    embeddings, labels = batch()
    with tf.GradientTape() as tape:
        loss = head(embeddings, labels) + tf.reduce_sum(other)
    kernel_before = head.kernel.numpy().copy()
    grads = tape.gradient(loss, [head.kernel, other])
    opt.apply(grads, [head.kernel, other])
    expected = kernel_before * (1 - 0.3 * 0.5) - 0.3 * grads[0].numpy()
    np.testing.assert_allclose(head.kernel.numpy(), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(other.numpy(), 1 - 0.1)
