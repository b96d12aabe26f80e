"""The pure parts of ``bench/lfw_view1.py``: the people file → image list step, eigenfaces, folds, accuracies."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from ffem_cli.data.image_list import FaceEntry, check_against_images, load_image_list, write_image_list
from ffem_cli.evaluate import metrics
from ffem_cli.evaluate.lfw import image_dir
from ffem_cli.evaluate.pairfiles import PairList, read_lfw_people
from ffem_cli.evaluate.verification import ScoredPairs

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "lfw_view1.py"
_spec = importlib.util.spec_from_file_location("lfw_view1", SCRIPT)
lfw_view1 = importlib.util.module_from_spec(_spec)
sys.modules["lfw_view1"] = lfw_view1  # dataclasses look their module up by name
_spec.loader.exec_module(lfw_view1)

BOX = (79, 65, 170, 188)


def test_people_image_list_keeps_people_with_two_or_more_images(tmp_path):
    people = {"Zoe_B": 2, "Al_A": 3, "Solo_C": 1}
    entries, label_map = lfw_view1.people_image_list(people, BOX)
    assert label_map == {"Al_A": 0, "Zoe_B": 1}
    assert sorted(entries) == [
        "Al_A/Al_A_0001.jpg",
        "Al_A/Al_A_0002.jpg",
        "Al_A/Al_A_0003.jpg",
        "Zoe_B/Zoe_B_0001.jpg",
        "Zoe_B/Zoe_B_0002.jpg",
    ]
    assert [entries[k].label for k in sorted(entries)] == [0, 0, 0, 1, 1]
    assert {entries[k].box for k in entries} == {BOX}
    write_image_list(tmp_path / "image_list.json", entries)
    assert load_image_list(tmp_path / "image_list.json") == entries


def test_people_image_list_with_singletons_keeps_everyone():
    entries, label_map = lfw_view1.people_image_list({"Zoe_B": 2, "Solo_C": 1}, BOX, min_images=1)
    assert label_map == {"Solo_C": 0, "Zoe_B": 1} and sorted(entries)[0] == "Solo_C/Solo_C_0001.jpg"


def test_aligned_image_list_takes_each_detection_and_leaves_out_undetected_images():
    landmarks = np.array([[90, 100], [130, 100], [110, 125], [95, 150], [125, 150]], np.float32)
    detections = {
        "Al_A/Al_A_0001.jpg": FaceEntry(7, (80, 70, 160, 180), landmarks),
        "Al_A/Al_A_0003.jpg": FaceEntry(7, (81, 71, 161, 181), landmarks + 1),
        "Zoe_B/Zoe_B_0002.jpg": FaceEntry(9, (82, 72, 162, 182), landmarks + 2),
    }
    entries, label_map = lfw_view1.people_image_list({"Zoe_B": 2, "Al_A": 3}, BOX, detections=detections)
    assert label_map == {"Al_A": 0, "Zoe_B": 1}  # the people file's labels, not the detector's
    assert entries == {
        "Al_A/Al_A_0001.jpg": FaceEntry(0, (80, 70, 160, 180), landmarks),
        "Al_A/Al_A_0003.jpg": FaceEntry(0, (81, 71, 161, 181), landmarks + 1),
        "Zoe_B/Zoe_B_0002.jpg": FaceEntry(1, (82, 72, 162, 182), landmarks + 2),
    }
    images = Path("/lfw")
    found = lfw_view1.face_source(images, "Al_A/Al_A_0001.jpg", detections)
    assert found.box == (80, 70, 160, 180) and np.array_equal(found.landmarks, landmarks)
    missing = lfw_view1.face_source(images, "Al_A/Al_A_0002.jpg", detections)
    assert missing.box == lfw_view1.FACE_BOX and missing.landmarks is None  # the fixed box instead
    assert lfw_view1.face_source(images, "Al_A/Al_A_0001.jpg", None).box == lfw_view1.FACE_BOX


def test_shipped_recipe_loads_and_its_train_table_is_a_valid_config():
    from ffem_cli.train import config as C

    recipe = lfw_view1.Recipe.load("lfw-small")
    assert recipe.path == lfw_view1.RECIPES / "lfw-small.toml" and recipe.size >= 96
    for table in recipe.stages:
        C.resolve(table)  # refuses unknown keys and bad values
    from ffem_cli.train.recipes import read_recipe

    # what `ffem train --recipe lfw-small --stage classifier|metric` reads
    assert [read_recipe("lfw-small", stage) for stage in ("classifier", "metric")] == list(recipe.stages)
    with pytest.raises(SystemExit, match="no recipe 'nope'"):
        lfw_view1.Recipe.load("nope")


def test_stratified_folds_put_50_same_and_50_different_pairs_in_each_fold():
    same = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    folds = metrics.stratified_folds(same)
    for fold in range(10):
        assert (same[folds == fold]).sum() == 50 and (~same[folds == fold]).sum() == 50
    assert folds[0] == 0 and folds[499] == 9 and folds[500] == 0 and folds[999] == 9


def _faces(rng, identities: int, per_identity: int, side: int = 16, noise: float = 20.0):
    """uint8 faces: a random pattern per identity plus pixel noise; labels."""
    patterns = rng.uniform(40, 215, (identities, side, side, 3))
    labels = np.repeat(np.arange(identities), per_identity)
    faces = patterns[labels] + rng.normal(0, noise, (labels.size, side, side, 3))
    return np.clip(faces, 0, 255).astype(np.uint8), labels


def test_eigenfaces_axes_match_the_exact_svd_and_projections_are_unit_vectors():
    rng = np.random.default_rng(0)
    faces, _ = _faces(rng, identities=8, per_identity=10)
    model = lfw_view1.Eigenfaces(components=5, whiten=True).fit(faces)
    gray = faces.astype(np.float32) @ lfw_view1.Eigenfaces.LUMA
    flat = gray.reshape(len(faces), -1)
    _, singular, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
    # same subspace and spread as the exact SVD (randomized SVD, signs free)
    np.testing.assert_allclose(np.abs(np.sum(model.axes * vt[:5], axis=1)), 1.0, atol=1e-3)
    np.testing.assert_allclose(model.scale, singular[:5] / np.sqrt(len(faces) - 1), rtol=1e-3)
    assert 0 < model.explained < 1
    assert model.input_shape == (None, 16, 16, 3) and model.output_shape == (None, 5)
    vectors = model.predict_on_batch(faces.astype(np.float32))
    assert vectors.shape == (80, 5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_eigenfaces_cosine_separates_identities_better_than_raw_chance():
    rng = np.random.default_rng(1)
    faces, labels = _faces(rng, identities=10, per_identity=6)
    for whiten in (False, True):
        vectors = (
            lfw_view1.Eigenfaces(components=9, whiten=whiten).fit(faces).predict_on_batch(faces.astype(np.float32))
        )
        similarity = vectors @ vectors.T
        same = (labels[:, None] == labels[None]) & ~np.eye(labels.size, dtype=bool)
        different = labels[:, None] != labels[None]
        assert similarity[same].mean() > 0.9 > similarity[different].mean() + 0.5


def _scored(scores, same) -> ScoredPairs:
    n = len(scores)
    names = [f"p/p_{i:04d}.jpg" for i in range(n)]
    pairs = PairList(Path("pairs.txt"), names, names, np.asarray(same), np.zeros(n, int), list(range(2, n + 2)))
    return ScoredPairs(pairs, np.asarray(scores, dtype=np.float32), np.ones(n, bool), [])


def test_accuracies_apply_the_devtrain_threshold_to_the_test_pairs():
    same = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    # training pairs separate at 0.5; test pairs are shifted so that 0.5 misclassifies 20 same pairs
    train = _scored(np.where(same, 0.8, 0.2), same)
    test_scores = np.where(same, 0.7, 0.1)
    test_scores[:20] = 0.45
    result = lfw_view1.accuracies(train, _scored(test_scores, same))
    assert result["devtrain_threshold"] == pytest.approx(0.5)
    assert result["devtrain_accuracy"] == 1.0
    assert result["devtrain_threshold_test_accuracy"] == pytest.approx(0.9)
    assert result["cv10_mean"] == 1.0  # 0.45 still separates from 0.1 within the test folds
    assert result["auc"] == 1.0 and len(result["cv10_folds"]) == 10


@pytest.mark.realdata
def test_real_people_dev_train_gives_1184_identities_with_every_image_present(lfw_root):
    people = read_lfw_people(lfw_root / "peopleDevTrain.txt")[0]
    entries, label_map = lfw_view1.people_image_list(people, lfw_view1.FACE_BOX)
    assert (len(people), len(label_map), len(entries)) == (4038, 1184, 6671)
    check_against_images(entries, image_dir(lfw_root))  # every file exists and the box fits 250x250


def test_partial_fc_stage_repeats_the_last_stage_in_its_own_run_with_a_sample_rate(tmp_path):
    recipe = dataclasses.replace(lfw_view1.Recipe.load("lfw-small"), members=1)
    stages = lfw_view1.stage_commands(recipe, tmp_path, tmp_path / "pack", epochs=None)
    name, run, command = lfw_view1.partial_fc_stage(stages[-1], 0.3)
    assert name == "stage2-partial-fc" and run == tmp_path / "runs" / "stage2-partial-fc"
    assert command[:3] == ["train", "--run", str(run)] and command[-2:] == ["--sample-rate", "0.3"]
    assert command[3:-2] == stages[-1][2][3:]  # same data, config and --init-from as the full-head stage


def test_an_ensemble_recipe_trains_each_member_with_its_own_seed_and_joins_the_last_stages(tmp_path):
    recipe = dataclasses.replace(lfw_view1.Recipe.load("lfw-small"), members=3)
    stages = lfw_view1.stage_commands(recipe, tmp_path, tmp_path / "pack", epochs=None)
    assert [name for name, _, _ in stages] == [f"member{m}-stage{s}" for m in range(3) for s in (1, 2)]
    for index, (_, run, command) in enumerate(stages):
        member = index // 2
        assert run == tmp_path / "runs" / f"member{member}" / f"stage{index % 2 + 1}"
        assert command[-2:] == ["--seed", str(member)]
        if index % 2:  # the metric stage starts from the same member's classifier
            assert command[command.index("--init-from") + 1] == str(stages[index - 1][1])
    with_partial_fc = [*stages, lfw_view1.partial_fc_stage(stages[-1], 0.3)]  # --sample-rate: not a member
    run, command = lfw_view1.ensemble_command(recipe, with_partial_fc, tmp_path)
    assert command == ["ensemble", *(str(tmp_path / "runs" / f"member{m}" / "stage2") for m in range(3)),
                       "--run", str(run)]  # fmt: skip
    assert lfw_view1.Recipe.load("lfw-small").members == 3
    assert lfw_view1.Recipe.load("lfw-small").keep == "central"  # ffem detect --keep
    single = lfw_view1.stage_commands(dataclasses.replace(recipe, members=1), tmp_path, tmp_path / "pack", None)
    assert [(name, run) for name, run, _ in single] == [
        ("stage1", tmp_path / "runs" / "stage1"),
        ("stage2", tmp_path / "runs" / "stage2"),
    ]
    assert all("--seed" not in command for _, _, command in single)
