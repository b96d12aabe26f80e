"""``ffem train --recipe``, the seeds' optimiser and schedule settings, and the recipe runs."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.errors import FfemError
from ffem_cli.train import config as C
from ffem_cli.train import recipes
from ffem_cli.train.model import build_optimizer
from ffem_cli.train.schedules import WarmupDecay
from tests.train_fixtures import cli_flags, make_pack

SEED_RECIPES = ("ee488b", "ffem-001", "ffem-003", "massface")


def test_the_four_seed_recipes_ship_and_resolve_for_both_stages():
    assert set(SEED_RECIPES) <= set(recipes.recipe_names())
    for name in SEED_RECIPES:
        info = recipes.recipe_info(name)
        assert info["summary"] and info["source"], name
        for stage in ("classifier", "metric"):
            config = C.resolve({}, {"recipe": name, "stage": stage})
            assert (config.recipe, config.stage) == (name, stage)


def test_recipes_set_the_seed_defaults():
    first = C.resolve({}, {"recipe": "ffem-001"})
    assert (first.stage, first.backbone, first.loss, first.optimizer, first.lr, first.epochs) == (
        "classifier",
        "mobilenetv3-minimalistic",
        "l2-softmax",
        "adam",
        1e-4,
        50,
    )
    assert (first.dropout, first.head_l2, first.pooling) == (0.3, 5e-4, "gnap")
    second = C.resolve({}, {"recipe": "ffem-001", "stage": "metric"})
    assert (second.loss, second.optimizer, second.nesterov, second.dropout) == ("angular-margin", "sgd", True, 0.5)
    assert C.resolve({}, {"recipe": "ffem-003"}).loss == "softmax-center"
    ee = C.resolve({}, {"recipe": "ee488b"})
    assert (ee.backbone, ee.loss, ee.batch_size, ee.classes_per_batch, ee.images_per_identity) == (
        "thin-resnet34-se",
        "amsoftmax",
        200,
        200,
        1,
    )
    assert (ee.schedule, ee.decay_every, ee.decay_factor, ee.epochs) == ("step", 5.0, 0.9, 70)
    triplet = C.resolve({}, {"recipe": "massface", "stage": "metric"})
    assert (
        triplet.loss,
        triplet.optimizer,
        triplet.batch_size,
        triplet.images_per_identity,
        triplet.embedding_size,
    ) == ("massface-triplet", "adagrad", 205, 5, 1024)


def test_a_recipe_sits_under_the_config_file_and_the_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 0.01\nepochs = 7\n")
    config = C.resolve(C.read_config_file(path), {"recipe": "ee488b", "epochs": 3})
    assert (config.lr, config.epochs, config.backbone) == (0.01, 3, "thin-resnet34-se")
    with pytest.raises(FfemError, match=r"^unknown recipe 'ee4888'; choose one of: .*ee488b"):
        C.resolve({}, {"recipe": "ee4888"})


def test_any_toml_in_the_recipe_folder_is_a_recipe(tmp_path, monkeypatch):
    (tmp_path / "lfw-small.toml").write_text(
        '[recipe]\nsummary = "s"\nsource = "t"\n[train]\nepochs = 4\nbackbone = "tiny"\n'
    )
    (tmp_path / "broken.toml").write_text("[train]\nepoks = 4\n")
    monkeypatch.setattr(recipes, "RECIPE_DIR", tmp_path)
    assert recipes.recipe_names() == ["broken", "lfw-small"]
    assert C.resolve({}, {"recipe": "lfw-small"}).epochs == 4
    with pytest.raises(FfemError, match=r"broken.toml: unknown training setting 'epoks'"):
        C.resolve({}, {"recipe": "broken"})


def test_adamw_gets_the_seed_weight_decay_unless_one_is_given():
    assert C.resolve({}, {"optimizer": "adamw"}).weight_decay == 1e-4
    assert C.resolve({}, {"optimizer": "adamw", "weight_decay": 0.0}).weight_decay == 0.0
    assert C.resolve({}, {"optimizer": "adam"}).weight_decay == 0.0
    adagrad = build_optimizer("adagrad", 1e-3, weight_decay=1e-4)
    assert type(adagrad).__name__ == "Adagrad" and adagrad.weight_decay == pytest.approx(1e-4)


def test_classes_per_batch_counts_identities():
    config = C.resolve({}, {"classes_per_batch": 10, "images_per_identity": 3})
    assert config.batch_size == 30
    with pytest.raises(FfemError, match=r"^batch size 16 is not classes-per-batch 10"):
        C.resolve({}, {"classes_per_batch": 10, "batch_size": 16})


def _lr(schedule, step):
    return float(np.asarray(schedule(step)))


def test_step_every_n_and_exponential_schedules():
    every = WarmupDecay(1e-3, total_steps=100, decay="step", every=5, factor=0.9)
    assert [_lr(every, t) for t in (0, 4, 5, 14, 15)] == pytest.approx([1e-3, 1e-3, 9e-4, 8.1e-4, 7.29e-4])
    stairs = WarmupDecay(0.1, total_steps=100, decay="exponential", every=10, factor=0.5)
    assert [_lr(stairs, t) for t in (9, 10, 25)] == pytest.approx([0.1, 0.05, 0.025])
    smooth = WarmupDecay(0.1, total_steps=100, decay="exponential", every=10, factor=0.5, staircase=False)
    assert _lr(smooth, 5) == pytest.approx(0.1 * 0.5**0.5)
    assert _lr(WarmupDecay.from_config(smooth.get_config()), 5) == _lr(smooth, 5)
    with pytest.raises(FfemError, match="exponential schedule needs --decay-every"):
        C.resolve({}, {"schedule": "exponential"})


def test_gpu_ids_must_exist():
    from ffem_cli.train.strategy import make_strategy

    with pytest.raises(FfemError, match=r"^--gpu 3: only 0 GPU\(s\) are visible"):
        make_strategy(0, [3])


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    return make_pack(tmp_path_factory.mktemp("recipe_pack"), identities=6, images_per_identity=6)


def test_train_with_a_recipe_prints_and_records_it(pack_dir, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            *cli_flags(recipe="ee488b", data=pack_dir, run=run, backbone="tiny", embedding_size=16),
            *cli_flags(classes_per_batch=6, epochs=1, augment_option=["hue=0.05", "cutout=0.5", "cutout_size=0.3"]),
        ],
    )
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "recipe ee488b (classifier stage): " in printed
    assert "backbone='tiny' (recipe: 'thin-resnet34-se')" in printed
    assert "'scale': [0.894, 1.0], 'contrast': 0.7, 'saturation': 0.7, 'hue': 0.05" in printed
    stored = tomllib.loads((run / "run.toml").read_text())["train"]
    assert (stored["recipe"], stored["loss"], stored["batch_size"]) == ("ee488b", "amsoftmax", 6)
    assert stored["augment_options"]["hue"] == 0.05
    again = CliRunner().invoke(app, ["train", "--run", str(run), "--resume", "--epochs", "2"])
    assert again.exit_code == 0, again.output
