"""`ffem models` and the registry descriptions it prints."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ffem_cli import losses
from ffem_cli.cli import app
from ffem_cli.models import backbones
from ffem_cli.models.catalog import registry_rows
from ffem_cli.registry import Entry


@pytest.fixture
def two_backbones(monkeypatch):
    for name in list(backbones.BACKBONES):
        if name not in ("mobilefacenet", "tiny"):
            monkeypatch.delitem(backbones.BACKBONES, name)


def test_models_lists_measured_backbones_and_poolings(two_backbones):
    result = CliRunner().invoke(app, ["models", "--embedding-size", "128"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    mobilefacenet = next(line for line in lines if "mobilefacenet" in line and "gdc" in line)
    assert "1.00" in mobilefacenet  # M parameters with a 128-d embedding
    assert "0.221" in mobilefacenet and "0.442" in mobilefacenet  # GMACs, GFLOPs
    assert any(line.split("│")[1].strip() == "tiny" for line in lines if "│" in line)
    for pooling in ("gap", "gnap", "gdc", "flatten-fc"):
        assert any(line.split("│")[1].strip() == pooling for line in lines if "│" in line)
    if getattr(losses, "LOSSES", None):
        assert "Losses (--loss)" in result.output
        assert all(name in result.output for name in losses.LOSSES)
    if getattr(losses, "MINERS", None):
        assert "Miners (--miner)" in result.output
    assert "Recipes (ffem train --recipe)" in result.output
    rows = [line.split("│")[1].strip() for line in lines if line.count("│") >= 3]
    assert {"ee488b", "ffem-001", "ffem-003", "massface"} <= set(rows)


def test_train_help_names_the_recipes():
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    from ffem_cli.train.recipes import recipe_names

    assert ", ".join(recipe_names()) in " ".join(result.output.split())


def test_models_leaves_out_backbones_that_need_a_larger_input(two_backbones):
    result = CliRunner().invoke(app, ["models", "--input-size", "64"])
    assert result.exit_code == 0, result.output
    assert "left out (need a larger input than 64 px): mobilefacenet" in result.output
    rows = [line.split("│")[1].strip() for line in result.output.splitlines() if "│" in line]
    assert "tiny" in rows and "mobilefacenet" not in rows


def test_models_rejects_a_tiny_input_size():
    result = CliRunner().invoke(app, ["models", "--input-size", "8"])
    assert result.exit_code == 2


class FakeMiner:
    """Hardest positive and negative per anchor."""

    def __init__(self, margin=0.2, squared=True):
        pass


def arcface_builder(num_classes, embedding_size, margin=0.5, scale=64.0):
    """Additive angular margin (Deng et al. 2019)."""


def test_registry_rows_read_family_paper_and_signature_defaults_with_overrides():
    registry = {
        "cosface": Entry(object, "Wang et al. 2018", "classification", overrides={"margin": 0.35}),
        "batch-hard": Entry(FakeMiner, "Hermans et al. 2017"),
        "arcface": Entry(arcface_builder, "Additive angular margin (Deng et al. 2019)."),
        "hardest": Entry(FakeMiner, "Hardest positive and negative per anchor."),
    }
    assert list(registry_rows(registry)) == [
        ("cosface", "classification", "margin=0.35", "Wang et al. 2018"),
        ("batch-hard", "", "margin=0.2, squared=True", "Hermans et al. 2017"),
        ("arcface", "", "margin=0.5, scale=64.0", "Additive angular margin (Deng et al. 2019)."),
        ("hardest", "", "margin=0.2, squared=True", "Hardest positive and negative per anchor."),
    ]
