"""Training runs that start from other weights or export a loss's own head:
``--init-backbone-only``, ``--freeze-backbone-epochs`` with a pair loss, GroupFace's
group-aware embedder."""

from __future__ import annotations

import tomllib

import keras
import numpy as np
import pytest

from ffem_cli.models.embedder import backbone_of
from ffem_cli.train import config as C
from ffem_cli.train.trainer import train
from tests.train_fixtures import make_pack


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    return make_pack(tmp_path_factory.mktemp("transfer_pack"), identities=6, images_per_identity=8)


def small(pack_dir, **changes):
    flags = dict(
        data=str(pack_dir),
        backbone="tiny",
        embedding_size=16,
        batch_size=16,
        lr=3e-3,
        epochs=1,
        checkpoint_every=100,
        augment="off",
    )
    return C.resolve({}, {**flags, **changes})


def test_backbone_only_init_then_frozen_backbone_while_a_triplet_head_learns(pack_dir, tmp_path):
    first = tmp_path / "classifier"
    train(small(pack_dir), first, show_progress=False)
    source = keras.models.load_model(first / "embedder.keras", compile=False)

    second = tmp_path / "triplet"
    config = small(
        pack_dir,
        stage="metric",
        loss="triplet",
        init_from=str(first),
        init_backbone_only=True,
        pooling="gnap",
        embedding_size=24,
        freeze_backbone_epochs=1,
        optimizer="adam",
    )
    train(config, second, show_progress=False)
    model = tomllib.loads((second / "run.toml").read_text())["model"]
    assert (model["backbone"], model["pooling"], model["embedding_size"]) == ("tiny", "gnap", 24)
    tuned = keras.models.load_model(second / "embedder.keras", compile=False)
    assert tuned.output_shape == (None, 24)
    for before, after in zip(backbone_of(source).trainable_weights, backbone_of(tuned).trainable_weights, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())  # copied, then frozen
    gamma = tuned.get_layer("gnap_embedding_bn").weights[0].numpy()
    assert not np.allclose(gamma, 1.0)  # the head's BN γ moved: the pair loss trained it


def test_groupface_run_saves_the_group_aware_embedder(pack_dir, tmp_path):
    run = tmp_path / "groupface"
    config = small(pack_dir, loss="groupface", loss_options={"gdn_units": 8, "scale": 16.0, "margin": 0.2})
    train(config, run, show_progress=False)
    embedder = keras.models.load_model(run / "embedder.keras", compile=False)
    assert any(layer.name == "group_aware" for layer in embedder.layers)
    faces = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    vectors = embedder.predict(faces, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors.shape == (2, 16)


def test_pool_triplet_trains_and_fills_its_pool(pack_dir, tmp_path):
    from ffem_cli.train import checkpoint

    run = tmp_path / "pool"
    config = small(
        pack_dir,
        stage="metric",
        loss="pool-triplet",
        optimizer="adam",
        loss_options={"pool_size": 32, "miner": "batch-hard"},
        checkpoint_every=1,
    )
    result = train(config, run, show_progress=False)
    assert np.isfinite(result.last_loss)
    newest = checkpoint.list_checkpoints(run / "checkpoints")[-1]
    stored = dict(np.load(newest, allow_pickle=False))
    labels = [value for key, value in stored.items() if value.dtype == np.int32 and value.shape == (32,)]
    assert labels and (labels[0] >= 0).sum() == min(32, 16 * result.steps)
