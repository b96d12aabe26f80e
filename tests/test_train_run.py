"""``ffem train`` end to end on a small synthetic pack (CPU, tiny backbone, 64-pixel faces)."""

from __future__ import annotations

import json
import tomllib

import keras
import numpy as np
import pytest
from train_fixtures import cli_flags
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data import synthetic
from ffem_cli.data.pack import PackSettings, pack
from ffem_cli.errors import FfemError
from ffem_cli.evaluate.retrieval import evaluate_retrieval
from ffem_cli.train import checkpoint
from ffem_cli.train import config as C
from ffem_cli.train.trainer import train
from ffem_cli.train.validation import embed_pack

IDENTITIES = 8


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    """8 identities × 12 synthetic faces, 64 px, 2 shards (96 images: 6 batches of 16)."""
    root = tmp_path_factory.mktemp("train_pack")
    image_list = synthetic.write_dataset(root / "faces", identities=IDENTITIES, images_per_identity=12, seed=3)
    pack(image_list, root / "faces", root / "pack", PackSettings(image_size=64, shards=2), workers=1)
    return root / "pack"


def small(pack_dir, **changes):
    """A fast config: tiny backbone, 32-d embeddings, batch 16, Adam 3e-3."""
    flags = dict(
        data=str(pack_dir),
        backbone="tiny",
        embedding_size=32,
        batch_size=16,
        lr=3e-3,
        epochs=2,
        checkpoint_every=2,
        augment="off",
    )
    flags.update(changes)
    return C.resolve({}, flags)


def recall_at_1(embedder, pack_dir) -> float:

    _, labels, vectors = embed_pack(embedder, pack_dir)
    return evaluate_retrieval(vectors, labels, ks=(1,)).metrics["recall@1"]


def test_classifier_then_metric_stage(pack_dir, tmp_path):
    first = tmp_path / "classifier"
    result = CliRunner().invoke(
        app,
        [
            "train",
            *cli_flags(data=pack_dir, run=first, backbone="tiny", embedding_size=32, batch_size=16, lr=0.01),
            *cli_flags(epochs=10, checkpoint_every=4, augment="off"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, 11)) and lines[-1]["step"] == 60
    assert lines[-1]["loss"] < 0.5 * lines[0]["loss"]
    assert lines[-1]["accuracy"] > 4 / IDENTITIES  # chance: 1/8
    saved = tomllib.loads((first / "run.toml").read_text())
    assert saved["data"]["image_size"] == 64 and saved["data"]["num_classes"] == IDENTITIES
    assert len(saved["data"]["manifest_sha256"]) == 64
    assert saved["model"] == {
        "backbone": "tiny",
        "pooling": "gap",
        "embedding_size": 32,
        "dropout": 0.0,
        "head_l2": 0.0,
    }
    assert saved["loss"]["alpha"] == 30.0 and saved["provenance"]["keras_version"] == keras.__version__
    assert list((first / "logs").glob("events.out.tfevents.*"))
    assert len(checkpoint.list_checkpoints(first / "checkpoints")) == 3

    embedder = keras.models.load_model(first / "embedder.keras", compile=False)  # plain Keras, no head
    assert embedder.name == "embedder" and embedder.output_shape == (None, 32)
    chance = 11 / 95  # a random neighbour shares the identity with probability 11/95
    classifier_recall = recall_at_1(embedder, pack_dir)
    assert classifier_recall > 3.5 * chance

    second = tmp_path / "metric"
    # ArcFace at a scale and margin suited to 8 classes (the defaults s=64, m=0.5 suit thousands)
    metric = small(
        pack_dir,
        stage="metric",
        init_from=str(first),
        optimizer="adam",
        lr=1e-3,
        epochs=2,
        embedding_size=999,
        freeze_backbone_epochs=1,
        loss_options={"scale": 16.0, "margin": 0.2},
    )
    outcome = train(metric, second, show_progress=False)
    assert outcome.steps == 12 and outcome.epochs_done == 2
    saved = tomllib.loads((second / "run.toml").read_text())
    assert saved["model"]["embedding_size"] == 32  # taken from the classifier run
    assert saved["loss"]["name"] == "arcface" and saved["loss"]["margin"] == 0.2
    tuned = keras.models.load_model(second / "embedder.keras", compile=False)
    assert recall_at_1(tuned, pack_dir) > 0.8 * classifier_recall


def test_interrupted_run_resumes_to_the_same_weights(pack_dir, tmp_path, capsys):
    reference = train(small(pack_dir), tmp_path / "straight", show_progress=False)
    config = small(pack_dir)
    halted = train(config, tmp_path / "broken", halt_at_step=7, show_progress=False)
    assert halted.halted and halted.steps == 7
    kept = checkpoint.list_checkpoints(tmp_path / "broken" / "checkpoints")
    assert [p.name for p in kept] == ["ckpt-000000002.npz", "ckpt-000000004.npz", "ckpt-000000006.npz"]
    # the newest checkpoint was cut short (a disk incident): resume falls back to the previous one
    kept[-1].write_bytes(kept[-1].read_bytes()[:1000])
    resumed = train(config, tmp_path / "broken", show_progress=False)  # same command again: continues
    assert "ckpt-000000006.npz is unreadable" in capsys.readouterr().err
    assert resumed.steps == reference.steps == 12 and not resumed.halted
    a = keras.models.load_model(tmp_path / "straight" / "embedder.keras").get_weights()
    b = keras.models.load_model(tmp_path / "broken" / "embedder.keras").get_weights()
    for left, right in zip(a, b, strict=True):
        np.testing.assert_allclose(left, right, rtol=1e-4, atol=1e-5)
    assert resumed.last_loss == pytest.approx(reference.last_loss, rel=1e-4)


def test_margin_warmup_ramps_with_the_step_and_resumes_exactly(pack_dir, tmp_path):
    arcface = dict(
        stage="metric", optimizer="adam", lr=3e-3, loss_options={"scale": 16.0, "margin": 0.5}, margin_warmup_epochs=1.5
    )  # 6 steps an epoch: full margin from step 9
    reference = train(small(pack_dir, **arcface), tmp_path / "straight", show_progress=False)
    halted = train(small(pack_dir, **arcface), tmp_path / "broken", halt_at_step=7, show_progress=False)
    assert halted.halted and halted.steps == 7  # killed inside the ramp
    resumed = train(small(pack_dir, **arcface), tmp_path / "broken", show_progress=False)
    assert resumed.last_loss == pytest.approx(reference.last_loss, rel=1e-4)
    a = keras.models.load_model(tmp_path / "straight" / "embedder.keras").get_weights()
    b = keras.models.load_model(tmp_path / "broken" / "embedder.keras").get_weights()
    for left, right in zip(a, b, strict=True):
        np.testing.assert_allclose(left, right, rtol=1e-4, atol=1e-5)
    without = train(
        small(pack_dir, **{**arcface, "margin_warmup_epochs": 0.0}), tmp_path / "plain", show_progress=False
    )
    assert without.last_loss != pytest.approx(reference.last_loss, rel=1e-3)  # the ramp changed training

    from ffem_cli.losses import build_loss
    from ffem_cli.train.model import TrainingModel, build_optimizer

    model = TrainingModel(keras.Sequential([keras.layers.Dense(4)]), build_loss("arcface", 3, 4), margin_warmup_steps=8)
    model.compile(optimizer=build_optimizer("sgd", 0.1))
    fractions = []
    for step in (0, 2, 8, 20):
        model.optimizer.iterations.assign(step)
        fractions.append(float(model.margin_fraction()))
    assert fractions == [0.0, 0.25, 1.0, 1.0]
    with pytest.raises(
        FfemError,
        match=r"^margin warm-up needs a margin loss \(arcface, cosface, \.\.\.\); "
        r"L2SoftmaxHead has no margin$",
    ):
        train(small(pack_dir, margin_warmup_epochs=1.0), tmp_path / "l2", show_progress=False)


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(pack_dir, tmp_path):
    config = small(
        pack_dir,
        optimizer="sgd",
        lr=0.01,
        schedule="step",
        decay_epochs=[1],
        decay_factor=float("inf"),
        checkpoint_every=100,
    )
    with pytest.raises(
        FfemError,
        match=r"^loss became nan at step 8 \(epoch 2, step 2\); training stopped, "
        r"the last good checkpoint is .*ckpt-000000006\.npz$",
    ):
        train(config, tmp_path / "nan", show_progress=False)
    kept = checkpoint.list_checkpoints(tmp_path / "nan" / "checkpoints")
    assert [p.name for p in kept] == ["ckpt-000000006.npz"]
    with np.load(kept[0]) as archive:
        assert all(np.isfinite(archive[k]).all() for k in archive.files if k != "__meta__")


def test_mixed_precision_and_xla_run(pack_dir, tmp_path):
    config = small(pack_dir, precision="mixed_bfloat16", xla=True, epochs=1)
    result = train(config, tmp_path / "bf16", show_progress=False, halt_at_step=None)
    assert np.isfinite(result.last_loss) and keras.mixed_precision.global_policy().name == "float32"
    embedder = keras.models.load_model(tmp_path / "bf16" / "embedder.keras")
    vectors = embedder(np.full((2, 64, 64, 3), 128.0, np.float32))
    assert vectors.dtype == "float32"
    np.testing.assert_allclose(np.linalg.norm(np.asarray(vectors), axis=1), 1.0, rtol=1e-5)


def test_refusals(pack_dir, tmp_path):
    run = tmp_path / "run"
    train(small(pack_dir, epochs=1), run, show_progress=False)
    with pytest.raises(
        FfemError,
        match=rf"^{run}: already holds a run with a different configuration; "
        "use --resume to continue it or choose another --run$",
    ):
        train(small(pack_dir, epochs=1, lr=0.1), run, show_progress=False)
    with pytest.raises(FfemError, match=rf"^{tmp_path / 'none'}: nothing to resume \(no run.toml\)$"):
        train(small(pack_dir), tmp_path / "none", resume=True, show_progress=False)
    with pytest.raises(FfemError, match=rf"^{pack_dir}: the pack has 8 classes but the head is set to 5 "):
        train(small(pack_dir, num_classes=5), tmp_path / "classes", show_progress=False)
    with pytest.raises(
        FfemError,
        match=r"^loss 'triplet' compares images of the same identity: it needs at "
        r"least 2 images per identity in a batch, got --images-per-identity 1$",
    ):
        train(
            small(pack_dir, stage="metric", loss="triplet", images_per_identity=1), tmp_path / "k", show_progress=False
        )
    with pytest.raises(FfemError, match=r"^unknown backbone 'vgg'; choose one of: mobilefacenet, "):
        train(small(pack_dir, backbone="vgg"), tmp_path / "vgg", show_progress=False)
    with pytest.raises(FfemError, match=r"^unknown loss 'hinge'"):
        train(small(pack_dir, loss="hinge"), tmp_path / "hinge", show_progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FfemError, match="other: exists and is not an ffem run directory; choose another --run$"):
        train(small(pack_dir), tmp_path / "other", show_progress=False)
    for name in ("classes", "k", "vgg", "hinge", "none"):
        assert not (tmp_path / name / "checkpoints").exists()
    result = CliRunner().invoke(app, ["train", "--data", str(pack_dir), "--run", str(run), "--lr", "0.5"])
    assert result.exit_code == 1 and "already holds a run with a different configuration" in result.output
