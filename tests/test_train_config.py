"""Training config resolution, schedules and pair lists (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from ffem_cli.errors import FfemError
from ffem_cli.train import config as C
from ffem_cli.train.schedules import WarmupDecay
from ffem_cli.train.validation import read_pairs


def test_stage_defaults_follow_the_seed_recipe():
    classifier = C.resolve({}, {})
    assert (classifier.loss, classifier.optimizer, classifier.lr) == ("l2-softmax", "adam", 1e-4)
    metric = C.resolve({}, {"stage": "metric"})
    assert (metric.loss, metric.optimizer, metric.lr, metric.momentum, metric.nesterov) == (
        "arcface",
        "sgd",
        1e-3,
        0.9,
        True,
    )


def test_flags_override_the_file_which_overrides_stage_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nstage = "metric"\nlr = 0.01\nepochs = 7\n[train.loss_options]\nmargin = 0.4\n')
    resolved = C.resolve(C.read_config_file(path), {"epochs": 3, "batch_size": None})
    assert (resolved.stage, resolved.lr, resolved.epochs, resolved.batch_size) == ("metric", 0.01, 3, 128)
    assert resolved.loss_options == {"margin": 0.4}


def test_bad_settings_are_refused_in_one_line(tmp_path):
    with pytest.raises(FfemError, match=r"^flags: unknown training setting 'colour'; known: stage, data"):
        C.resolve({}, {"colour": 3})
    with pytest.raises(FfemError, match=r"^unknown optimizer 'rmsprop'; choose one of: sgd, adam, adamw, adagrad$"):
        C.resolve({}, {"optimizer": "rmsprop"})
    with pytest.raises(FfemError, match=r"^training setting 'epochs' must be int, got '3'$"):
        C.resolve({}, {"epochs": "3"})
    with pytest.raises(FfemError, match=r"^unknown augment 'colour'; choose one of: flip, strong, off$"):
        C.resolve({}, {"augment": "colour"})
    with pytest.raises(FfemError, match=r"^unknown stage 'pre'; choose one of: classifier, metric$"):
        C.resolve({}, {"stage": "pre"})
    with pytest.raises(FfemError, match=r"^batch size 10 is not a multiple of images-per-identity 4"):
        C.resolve({}, {"batch_size": 10, "images_per_identity": 4})
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(FfemError, match=r"bad.toml: malformed TOML"):
        C.read_config_file(bad)


def test_identity_groups_split_the_batch_and_the_replicas():
    assert C.identity_groups(32, 4) == (8, 4)
    assert C.identity_groups(32, 4, replicas=2) == (8, 4)
    with pytest.raises(FfemError, match=r"^batch size 30 is not a multiple of images-per-identity 4 \(P×K batches\)$"):
        C.identity_groups(30, 4)
    with pytest.raises(FfemError, match=r"^3 identities per batch do not divide among 2 replicas"):
        C.identity_groups(12, 4, replicas=2)


def _lr(schedule, step):
    return float(np.asarray(schedule(step)))


def test_schedules_warm_up_then_decay():
    cosine = WarmupDecay(1.0, total_steps=110, warmup_steps=10, decay="cosine", min_lr=0.1)
    assert _lr(cosine, 0) == pytest.approx(0.1)
    assert _lr(cosine, 9) == pytest.approx(1.0)
    assert _lr(cosine, 10) == pytest.approx(1.0)
    assert _lr(cosine, 60) == pytest.approx(0.55, abs=1e-6)
    assert _lr(cosine, 110) == pytest.approx(0.1)
    step = WarmupDecay(1.0, total_steps=100, decay="step", boundaries=[30, 60], factor=0.1)
    assert [_lr(step, t) for t in (0, 29, 30, 59, 60)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    poly = WarmupDecay(2.0, total_steps=10, decay="poly", power=2.0)
    assert _lr(poly, 5) == pytest.approx(0.5)
    again = WarmupDecay.from_config(cosine.get_config())
    assert _lr(again, 60) == _lr(cosine, 60)


def test_pair_lists_get_ten_folds(tmp_path):
    ee = tmp_path / "pairs.csv"
    ee.write_text("".join(f"{i % 2},a/{i}.jpg,b/{i}.jpg\n" for i in range(20)))
    pairs = read_pairs(ee)
    assert pairs.same.sum() == 10 and sorted(set(pairs.folds.tolist())) == list(range(10))
    one_sided = tmp_path / "same.csv"
    one_sided.write_text("1,a.jpg,b.jpg\n1,c.jpg,d.jpg\n")
    with pytest.raises(FfemError, match="same.csv: needs both same-person and different-person pairs"):
        read_pairs(one_sided)


# Settings a TOML --config sets but no flag does (each one deliberately).
TOML_ONLY = {"clipnorm", "nesterov", "poly_power"}


def test_train_flags_and_config_fields_agree(monkeypatch):
    """Every flag of `ffem train` lands on a TrainConfig field, and every field has a flag or is TOML-only."""
    import dataclasses

    from typer.testing import CliRunner

    from ffem_cli.cli import app
    from ffem_cli.train import config as config_module

    captured = {}

    class Captured(Exception):
        pass

    def capture(run, resume, config, flags):
        captured.update(flags)
        raise Captured

    monkeypatch.setattr(config_module, "for_run", capture)
    result = CliRunner().invoke(app, ["train", "--run", "r", "--data", "p"])
    assert isinstance(result.exception, Captured)
    fields = {field.name for field in dataclasses.fields(config_module.TrainConfig)}
    assert set(captured) <= fields, sorted(set(captured) - fields)
    assert fields - set(captured) == TOML_ONLY
