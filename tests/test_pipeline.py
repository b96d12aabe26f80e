"""tf.data pipelines over a pack: shapes, determinism per (seed, epoch), P×K batches, eval order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ffem_cli.data.image_list import load_image_list
from ffem_cli.data.pack import PackSettings, pack, plan_shards
from ffem_cli.data.packdir import PackDir
from ffem_cli.data.pipeline import (
    PARALLEL_CALLS,
    PREFETCH_BATCHES,
    Augment,
    eval_dataset,
    pk_batches,
    steps_per_epoch,
    train_dataset,
)
from ffem_cli.errors import FfemError


@pytest.fixture(scope="module")
def pack_dir(synthetic_faces, tmp_path_factory) -> Path:
    root, list_path = synthetic_faces
    output = tmp_path_factory.mktemp("pipeline") / "faces"
    pack(list_path, root, output, PackSettings(shards=4, image_size=48), workers=1)
    return output


def as_arrays(dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(t.numpy() for t in batch) for batch in dataset]


def test_train_batches_have_the_contract_shapes_types_and_range(pack_dir):
    batches = as_arrays(train_dataset(pack_dir, 8, epoch=0, seed=0, augment=Augment.strong()))
    assert len(batches) == steps_per_epoch(pack_dir, 8) == 36 // 8
    for images, labels in batches:
        assert images.shape == (8, 48, 48, 3) and images.dtype == np.float32
        assert labels.shape == (8,) and labels.dtype == np.int32
        assert images.min() >= 0.0 and images.max() <= 255.0 and images.max() > 100
        assert set(labels.tolist()) <= set(range(6))


def test_an_epoch_is_a_function_of_seed_and_epoch(pack_dir):
    strong = Augment.strong()
    first = as_arrays(train_dataset(pack_dir, 8, epoch=3, seed=7, augment=strong))
    again = as_arrays(train_dataset(pack_dir, 8, epoch=3, seed=7, augment=strong))
    other_epoch = as_arrays(train_dataset(pack_dir, 8, epoch=4, seed=7, augment=strong))
    other_seed = as_arrays(train_dataset(pack_dir, 8, epoch=3, seed=8, augment=strong))
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other_epoch, strict=True))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other_seed, strict=True))
    # A resumed run starts at its step and sees the same batches (crop, colour, flip and order).
    for pk in (None, (2, 4)):
        whole = as_arrays(train_dataset(pack_dir, 8, epoch=3, seed=7, augment=strong, pk=pk))
        resumed = as_arrays(train_dataset(pack_dir, 8, epoch=3, seed=7, augment=strong, pk=pk, start_step=2))
        assert len(resumed) == len(whole) - 2
        for (x, y), (x2, y2) in zip(resumed, whole[2:], strict=True):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)


def test_augmentation_off_yields_the_stored_pixels(pack_dir):
    evaluated = {}
    for images, _, paths in as_arrays(eval_dataset(pack_dir, 16)):
        for image, path in zip(images, paths, strict=True):
            evaluated[image.tobytes()] = path
    plain = as_arrays(train_dataset(pack_dir, 4, epoch=0, seed=0, augment=Augment.off()))
    for images, _ in plain:
        for image in images:
            assert image.tobytes() in evaluated
    augmented = as_arrays(train_dataset(pack_dir, 4, epoch=0, seed=0, augment=Augment.strong()))
    assert sum(image.tobytes() not in evaluated for images, _ in augmented for image in images) > 20


def test_default_augmentation_only_mirrors_some_images(pack_dir):
    stored = {img.tobytes() for imgs, _, _ in as_arrays(eval_dataset(pack_dir, 36)) for img in imgs}
    images = np.concatenate([x for x, _ in as_arrays(train_dataset(pack_dir, 4, epoch=0, seed=1, augment=True))])
    kept = [img.tobytes() in stored for img in images]
    mirrored = [img[:, ::-1].tobytes() in stored for img in images]
    assert all(k or m for k, m in zip(kept, mirrored, strict=True))
    assert 0 < sum(mirrored) < len(images)


def test_brightness_only_shifts_every_pixel_of_an_image_by_one_offset(pack_dir):
    brightness = Augment(flip=False, brightness=0.2)
    plain = as_arrays(train_dataset(pack_dir, 4, epoch=0, seed=3, augment=False))
    shifted = as_arrays(train_dataset(pack_dir, 4, epoch=0, seed=3, augment=brightness))
    offsets = []
    for (x, _), (y, _) in zip(plain, shifted, strict=True):
        for before, after in zip(x, y, strict=True):
            inside = (after > 0.5) & (after < 254.5)
            delta = (after - before)[inside]
            assert np.ptp(delta) < 1e-3  # one offset per image
            offsets.append(float(delta.mean()))
    assert max(abs(o) for o in offsets) <= 0.2 * 255 + 1e-3
    assert len({round(o, 2) for o in offsets}) > len(offsets) // 2  # drawn per image


def test_pk_batches_hold_p_identities_times_k_images(pack_dir):
    batches = as_arrays(train_dataset(pack_dir, 0, epoch=0, seed=0, augment=True, pk=(3, 2)))
    assert len(batches) == steps_per_epoch(pack_dir, 0, pk=(3, 2)) == 36 // 6
    for images, labels in batches:
        assert images.shape == (6, 48, 48, 3)
        blocks = labels.reshape(3, 2)
        assert (blocks == blocks[:, :1]).all()  # each block of K shares one identity
        assert len(set(blocks[:, 0].tolist())) == 3  # P distinct identities


def test_pk_leaves_out_single_image_identities_and_samples_small_ones_with_replacement():
    labels = np.array([0] * 6 + [1] * 6 + [2] * 1 + [3] * 2 + [4] * 5)
    batches = pk_batches(labels, (2, 4), seed=0, epoch=0)
    assert batches.shape == ((6 + 6 + 2 + 5) // 8, 8)
    picked = labels[batches]
    assert 2 not in picked
    for row, indices in zip(picked, batches, strict=True):
        for block, chosen in zip(row.reshape(2, 4), indices.reshape(2, 4), strict=True):
            assert len(set(block.tolist())) == 1
            if block[0] != 3:  # enough images: no repeats within a block
                assert len(set(chosen.tolist())) == 4
    np.testing.assert_array_equal(batches, pk_batches(labels, (2, 4), seed=0, epoch=0))
    assert not np.array_equal(batches, pk_batches(labels, (2, 4), seed=0, epoch=1))
    with pytest.raises(FfemError, match="P×K batches need 5 identities with at least 2 images; the pack has 4"):
        pk_batches(labels, (5, 2), seed=0, epoch=0)


def test_eval_dataset_yields_every_face_once_in_file_order(pack_dir, synthetic_faces):
    _, list_path = synthetic_faces
    entries = load_image_list(list_path)
    batches = as_arrays(eval_dataset(pack_dir, 10))
    assert [len(b[0]) for b in batches] == [10, 10, 10, 6]
    paths = [p.decode() for _, _, ps in batches for p in ps]
    labels = [int(label) for _, ls, _ in batches for label in ls]
    assert sorted(paths) == sorted(entries)
    assert labels == [entries[p].label for p in paths]
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int32
    # File order: shard 0 first, each shard in the order pack's seeded plan wrote it.
    assert paths == [key for shard in plan_shards(sorted(entries), 4, seed=0) for key in shard]


def test_pipelines_run_without_the_autotuner(pack_dir):
    # tf.data's autotuner thread made deleting an iterator wait for its sleep in progress: training
    # epochs of ~42 s took 82 s (bench/pipeline.py --teardown). The pipelines fix their parallelism.
    for dataset in (train_dataset(pack_dir, 8, epoch=0, seed=0), eval_dataset(pack_dir, 8)):
        assert dataset.options().autotune.enabled is False
    assert PARALLEL_CALLS >= 1 and PREFETCH_BATCHES >= 1


def test_read_manifest_errors(tmp_path, pack_dir):
    with pytest.raises(FfemError) as caught:
        PackDir(tmp_path).manifest()
    assert str(caught.value) == f"{tmp_path}: not a finished pack (no manifest.json); run ffem pack first"
    PackDir(tmp_path).manifest_path.write_text("{")
    with pytest.raises(FfemError, match=r"manifest.json: unreadable manifest \(Expecting"):
        PackDir(tmp_path).manifest()
    PackDir(tmp_path).manifest_path.write_text(json.dumps({"image_size": 112}))
    with pytest.raises(FfemError, match="malformed manifest \\(missing crop, num_examples, num_classes, shards\\)"):
        PackDir(tmp_path).manifest()
    assert PackDir(pack_dir).manifest()["num_examples"] == 36


def test_batch_larger_than_the_pack_is_refused(pack_dir):
    with pytest.raises(FfemError, match="36 images cannot fill one batch of 64"):
        train_dataset(pack_dir, 64, epoch=0, seed=0, augment=False)


@pytest.mark.realdata
def test_pack_and_pipeline_over_300_lfw_images(lfw_root, tmp_path):
    """Middle 125x125 of the 250x250 deep-funneled images as the face box."""
    images = lfw_root / "images"
    entries, label = {}, 0
    for person in sorted(p for p in images.iterdir() if p.is_dir()):
        files = sorted(person.glob("*.jpg"))
        if len(files) < 2:
            continue
        for file in files[:6]:
            entries[f"{person.name}/{file.name}"] = {
                "label": label,
                "x1": 62,
                "y1": 62,
                "x2": 187,
                "y2": 187,
            }
        label += 1
        if len(entries) >= 300:
            break
    list_path = tmp_path / "image_list.json"
    list_path.write_text(json.dumps(entries))
    result = pack(list_path, images, tmp_path / "lfw", PackSettings(shards=4), workers=2)
    assert result.images == len(entries) and result.skipped == []
    assert PackDir(tmp_path / "lfw").manifest()["num_classes"] == label
    images_, labels = next(iter(train_dataset(tmp_path / "lfw", 0, epoch=0, seed=0, augment=True, pk=(8, 4))))
    assert images_.shape == (32, 112, 112, 3)
    assert len(set(labels.numpy().tolist())) == 8
    count = sum(int(b[0].shape[0]) for b in eval_dataset(tmp_path / "lfw", 64))
    assert count == len(entries)
