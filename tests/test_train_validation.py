"""``ffem train --val``: sets of every kind, plateau LR, early stop, exact resume, diagnostics."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from eval_fixtures import write_bin
from train_fixtures import cli_flags, make_pack, write_pair_list
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.errors import FfemError
from ffem_cli.train import checkpoint
from ffem_cli.train import config as C
from ffem_cli.train.diagnostics import active_figures, collapse_figures, margin_figures
from ffem_cli.train.trainer import train
from ffem_cli.train.validation import Watch, parse_every, parse_spec


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    """8 identities × 12 synthetic faces, 64 px (``faces/`` beside it): 6 batches of 16 per epoch."""
    return make_pack(tmp_path_factory.mktemp("val_pack"), seed=11)


def test_every_and_spec_parsing(pack_dir, tmp_path):
    assert parse_every("500") == (500, "step") and parse_every("2e") == (2, "epoch")
    for bad in ("0", "e", "1.5e", "x"):
        with pytest.raises(FfemError, match="val-every"):
            parse_every(bad)
    pairs = write_pair_list(pack_dir, tmp_path / "dev.csv")
    assert parse_spec(str(pairs), str(pack_dir)).source == pack_dir
    named = parse_spec(f"lfw={pairs}@{pack_dir.parent / 'faces'}", str(pack_dir))
    assert (named.name, named.kind, named.primary) == ("lfw", "pairs", "lfw/accuracy")
    assert parse_spec(str(pack_dir), str(pack_dir)).figure_names() == ["pack/recall@1", "pack/map@r"]
    with pytest.raises(FfemError, match="neither a pair list"):
        parse_spec(str(tmp_path / "absent.txt"), str(pack_dir))
    with pytest.raises(FfemError, match="holds its own"):
        parse_spec(f"{pack_dir}@{pack_dir}", str(pack_dir))


class _Optimizer:
    def __init__(self, lr):
        self.learning_rate = lr


@pytest.mark.parametrize("mode", ["max", "min"])
def test_watch_follows_keras_reduce_lr_on_plateau_and_early_stopping(mode):
    """The same sequence of figures through Keras's own callbacks and through ``Watch``."""
    rng = np.random.default_rng(0)
    values = np.round(rng.uniform(0.5, 0.6, 40), 3)  # ties and small gains: both min_deltas matter
    values[5] = values[6] = values[7]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    plateau = keras.callbacks.ReduceLROnPlateau("v", factor=0.5, patience=2, min_lr=0.01, mode=mode)
    stopper = keras.callbacks.EarlyStopping("v", patience=7, mode=mode)
    for callback in (plateau, stopper):
        callback.set_model(model)
        callback.on_train_begin()
    watch = Watch("v", mode == "min", early_stop=7, plateau=(0.5, 2, 0.01))
    mine = _Optimizer(0.1)
    for epoch, value in enumerate(values):
        plateau.on_epoch_end(epoch, {"v": value})
        stopper.on_epoch_end(epoch, {"v": value})
        watch.update(float(value), epoch, mine)
        assert mine.learning_rate == pytest.approx(float(model.optimizer.learning_rate), rel=1e-6)
        assert watch.state["stopped"] == model.stop_training, epoch
        if model.stop_training:
            break
    assert model.stop_training  # the sequence did reach an early stop


def test_diagnostic_figures_match_numpy_definitions():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 4))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    pairs = [unit[i] @ unit[j] for i in range(6) for j in range(6) if i != j]
    figures = collapse_figures(x)
    assert figures["mean_cosine"] == pytest.approx(np.mean(pairs))
    assert figures["spread"] == pytest.approx(2.0 * np.mean([np.std(unit[:, d]) for d in range(4)]))
    same = collapse_figures(np.ones((5, 8)))
    assert same["mean_cosine"] == pytest.approx(1.0) and same["spread"] == pytest.approx(0.0)

    cosines = np.array([[0.9, 0.1, 0.2], [0.3, 0.4, 0.35], [0.0, 0.5, -0.2]])
    labels = np.array([0, 1, 2])
    arcface = np.cos(np.arccos(cosines[[0, 1, 2], labels]) + 0.5)  # cos(θ_y + m)
    figures = margin_figures(cosines, labels, arcface)
    assert figures["target_cos"] == pytest.approx((0.9 + 0.4 - 0.2) / 3)
    assert figures["inside_margin"] == pytest.approx(2 / 3)  # row 0 clears the margin, rows 1 and 2 do not

    distances = np.array([[0, 1, 3], [1, 0, 1.1], [3, 1.1, 0]], dtype=float)
    # triplets (anchor, positive, negative): (0,1,2) gap 3-1 = 2 ≥ 0.2; (1,0,2) gap 1.1-1 = 0.1 < 0.2; a padding row
    figures = active_figures(
        distances, np.array([0, 1, 0]), np.array([1, 0, 0]), np.array([2, 2, 0]), np.array([1.0, 1.0, 0.0]), margin=0.2
    )
    assert figures == {"mined": 2.0, "active": 0.5}


def test_every_kind_of_set_during_training(pack_dir, tmp_path):
    faces = pack_dir.parent / "faces"
    pairs = write_pair_list(pack_dir, tmp_path / "dev.csv")
    write_bin(tmp_path / "agedb.bin", 20, seed=4, as_array=True)
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            *cli_flags(data=pack_dir, run=run, backbone="tiny", embedding_size=16, batch_size=16, lr=0.003, epochs=2),
            *cli_flags(augment="off", loss="arcface", loss_option=["scale=16", "margin=0.2"]),
            *cli_flags(val=[pairs, f"crops={pairs}@{faces}", tmp_path / "agedb.bin", f"gallery={faces}", pack_dir]),
            *cli_flags(monitor="pack/map@r"),
        ],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        for name in (
            "dev/accuracy",
            "dev/eer",
            "crops/accuracy",
            "agedb/accuracy",
            "agedb/accuracy_std",
            "agedb/eer",
            "gallery/recall@1",
            "gallery/map@r",
            "pack/recall@1",
            "pack/map@r",
        ):
            assert 0.0 <= record[name] <= 1.0, name
        assert 0.0 <= record["diag/inside_margin"] <= 1.0 and record["diag/grad_norm"] > 0
        assert -1.0 <= record["diag/mean_cosine"] <= 1.0 and record["lr"] == pytest.approx(0.003)
    best = max(r["pack/map@r"] for r in records)
    assert f"best pack/map@r {best:.4f}" in result.output
    assert "agedb/accuracy" in result.output  # the epoch line shows the figures
    bad = CliRunner().invoke(
        app,
        ["train", *cli_flags(data=pack_dir, run=tmp_path / "bad", backbone="tiny", val=pairs, monitor="nope/accuracy")],
    )
    assert bad.exit_code == 1 and "--monitor 'nope/accuracy' is not a figure" in bad.output


def test_resume_with_live_plateau_and_early_stop_state_is_exact(pack_dir, tmp_path):
    """Validation every 2 steps drives plateau (patience 1) and early stop (patience 3); a run stopped
    at step 7 (last checkpoint at step 6, counters non-zero) and resumed ends exactly as the whole run."""
    pairs = write_pair_list(pack_dir, tmp_path / "dev.csv")
    flags = dict(
        data=str(pack_dir),
        backbone="tiny",
        embedding_size=16,
        batch_size=16,
        lr=0.003,
        epochs=4,
        augment="off",
        val=[f"{pairs}"],
        val_every="2",
        schedule="plateau",
        plateau_patience=1,
        plateau_factor=0.5,
        early_stop=3,
        checkpoint_every=2,
        monitor="dev/eer",
    )
    whole = train(C.resolve({}, flags), tmp_path / "whole", show_progress=False)
    assert whole.steps < 24, "early stopping never ended the run; the test needs it"
    halted = train(C.resolve({}, flags), tmp_path / "part", show_progress=False, halt_at_step=7)
    assert halted.halted
    kept = checkpoint.list_checkpoints(tmp_path / "part" / "checkpoints")
    state = checkpoint._read(kept[-1])[1]["state"]["watch"]
    assert state["wait"] > 0 and not state["stopped"], state  # live: counters mid-way at the kill
    resumed = train(C.resolve({}, flags), tmp_path / "part", show_progress=False)
    assert (resumed.steps, resumed.best, resumed.monitor) == (whole.steps, whole.best, "dev/eer")

    def validations(run):
        lines = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r for r in lines if "dev/eer" in r and "loss" not in r}

    a, b = validations("whole"), validations("part")
    assert sorted(a) == sorted(b)
    for step in a:
        assert a[step]["dev/eer"] == pytest.approx(b[step]["dev/eer"], abs=1e-6)

    def lr(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["lr"] for x in lines if "lr" in json.loads(x)]

    assert lr("whole") == pytest.approx(lr("part")) and min(lr("whole")) < 0.003  # the plateau did lower it
    first = keras.models.load_model(tmp_path / "whole" / "embedder.keras")
    second = keras.models.load_model(tmp_path / "part" / "embedder.keras")
    for x, y in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_a_huge_learning_rate_collapses_the_embedding_and_says_so(pack_dir, tmp_path):
    run = tmp_path / "collapse"
    result = CliRunner().invoke(
        app,
        [
            "train",
            *cli_flags(data=pack_dir, run=run, backbone="tiny", embedding_size=16, batch_size=16, lr=10),
            *cli_flags(optimizer="sgd", epochs=1, augment="off"),
        ],
    )
    assert "warning: epoch 1: embedding collapse" in result.output, result.output
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["diag/mean_cosine"] > 0.95 or record["diag/spread"] < 0.05
