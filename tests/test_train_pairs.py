"""``ffem train --stage metric`` with a pair loss: P×K batches, the K < 2 refusals, --val-pairs."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from train_fixtures import cli_flags, make_pack, write_pair_list
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data import pipeline
from ffem_cli.train.validation import ValSet

P, K = 4, 4


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    """8 identities × 12 synthetic faces, 64 px: 96 images, 6 P×K batches of 4 × 4 per epoch."""
    return make_pack(tmp_path_factory.mktemp("pairs_pack"), seed=7)


@pytest.fixture
def batch_labels(monkeypatch):
    """Wraps ``pipeline.train_dataset``: records each epoch's ``pk`` and the labels of its batches."""
    real = pipeline.train_dataset
    seen = []

    def recording(pack_dir, batch_size, **options):
        dataset = real(pack_dir, batch_size, **options)
        seen.append((options.get("pk"), [labels.numpy() for _, labels in dataset]))
        return dataset

    monkeypatch.setattr(pipeline, "train_dataset", recording)
    return seen


def metric_flags(pack_dir, run, *extra):
    flags = cli_flags(
        stage="metric", data=pack_dir, run=run, backbone="tiny", embedding_size=32, batch_size=P * K,
        optimizer="adam", lr=0.003, augment="off", checkpoint_every=100,
    )  # fmt: skip
    return ["train", *flags, *extra]


def test_triplet_batch_hard_on_pk_batches_with_validation(pack_dir, tmp_path, batch_labels):
    run = tmp_path / "triplet"
    pairs_path = write_pair_list(pack_dir, tmp_path / "pairs.csv")
    result = CliRunner().invoke(
        app,
        metric_flags(
            pack_dir,
            run,
            "--loss",
            "triplet",
            "--miner",
            "batch-hard",
            "--epochs",
            "4",
            "--val-pairs",
            str(pairs_path),
        ),
    )
    assert result.exit_code == 0, result.output

    # every epoch trained on P×K batches: P identities, K consecutive images of each
    # (the first dataset is the diagnostics' probe batch: epoch 0, unaugmented, P×K too)
    assert [pk for pk, _ in batch_labels] == [(P, K)] * 5
    for _, batches in batch_labels:
        assert len(batches) == 6
        for labels in batches:
            blocks = labels.reshape(P, K)
            assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0])) == P

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and records[-1]["step"] == 24
    losses = [r["loss"] for r in records]
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses
    assert "accuracy" not in records[0]  # a pair loss has no logits
    # --val-pairs is the validation set named "val"
    accuracies = [r["val/accuracy"] for r in records]
    assert all(0.5 <= a <= 1.0 for a in accuracies), accuracies
    assert all(0.0 <= r["val/eer"] <= 0.5 for r in records)
    assert all(0.0 <= r["diag/active"] <= 1.0 and r["diag/mined"] > 0 for r in records)
    best = max(accuracies)
    assert f"best val/accuracy {best:.4f}" in result.output

    # embedder.keras is the best epoch's model: its accuracy on the pairs is the best recorded
    embedder = keras.models.load_model(run / "embedder.keras", compile=False)
    saved = ValSet("val", "pairs", pairs_path, pack_dir).evaluate(embedder)
    assert saved["val/accuracy"] == pytest.approx(best, abs=1e-6)
    assert best > 0.65  # chance is 0.5 (as many same- as different-person pairs); ~0.73 here


def test_pair_loss_refuses_fewer_than_two_images_per_identity(pack_dir, tmp_path):
    run = tmp_path / "k1"
    result = CliRunner().invoke(app, metric_flags(pack_dir, run, "--loss", "triplet", "--images-per-identity", "1"))
    assert result.exit_code == 1
    assert result.output.strip().endswith(
        "error: loss 'triplet' compares images of the same identity: it needs at least 2 images per "
        "identity in a batch, got --images-per-identity 1"
    )
    assert not run.exists()

    # a pack whose identities all have a single image cannot fill one P×K batch
    singles = make_pack(tmp_path / "singles", identities=8, images_per_identity=1, seed=2, image_size=32)
    run = tmp_path / "singles_run"
    result = CliRunner().invoke(app, metric_flags(singles, run, "--loss", "contrastive"))
    assert result.exit_code == 1
    assert result.output.strip().endswith(
        f"error: {singles}: too few identities with 2+ images for one batch of {P * K}"
    )
    assert not run.exists()
