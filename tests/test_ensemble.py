"""ffem ensemble: trained runs joined into one embedder whose pair cosine is the mean of the members',
written as a run directory the other commands load, and the one-line refusals."""

from __future__ import annotations

import tomllib
from pathlib import Path

import keras
import numpy as np
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.export import faces
from ffem_cli.hashing import file_sha256
from ffem_cli.inference.embedding import FacePrep
from ffem_cli.inference.models import load_embedder
from ffem_cli.models import build_embedder
from ffem_cli.rundir import RunDir, load_model_file

SIZE = 48
runner = CliRunner()


def member_run(path: Path, seed: int, embedding_size: int = 16, size: int = SIZE, crop: str = "margin") -> Path:
    """A run directory as ``ffem train`` leaves it, holding a tiny embedder initialised from ``seed``
    whose BatchNorm statistics come from real faces (so that members disagree)."""
    keras.utils.set_random_seed(seed)
    model = build_embedder("tiny", "gdc", embedding_size, size)
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batch_norms:
        layer.momentum = 0.0
    model(faces.synthetic_faces(FacePrep(image_size=size), 16, seed=seed).astype("float32"), training=True)
    run = RunDir(path)
    run.path.mkdir(parents=True)
    model.save(run.embedder_path)
    run.write_config(
        {
            "data": {"image_size": size, "crop": crop, "margin": 0.2, "pack": "/data/pack"},
            "model": {"backbone": "tiny", "pooling": "gdc", "embedding_size": embedding_size},
        }
    )
    return path


def invoke(*args) -> object:
    return runner.invoke(app, ["ensemble", *map(str, args)])


def test_ensemble_cosine_is_the_mean_of_the_members_cosines(tmp_path):
    members = [member_run(tmp_path / "a", 1), member_run(tmp_path / "b", 2, embedding_size=24)]
    result = invoke(*members, "--run", tmp_path / "ens")
    assert result.exit_code == 0, result.output
    assert "2 members, embedding 16 + 24 = 40 dimensions" in " ".join(result.stderr.split())

    pixels = faces.synthetic_faces(FacePrep(image_size=SIZE), 6, seed=9).astype("float32")
    joined = load_model_file(tmp_path / "ens" / "embedder.keras").predict_on_batch(pixels)
    assert joined.shape == (6, 40)
    np.testing.assert_allclose(np.linalg.norm(joined, axis=1), 1.0, atol=1e-5)
    cosines = [
        (vectors @ vectors.T)
        for vectors in (load_model_file(run / "embedder.keras").predict_on_batch(pixels) for run in members)
    ]
    assert not np.allclose(cosines[0], cosines[1], atol=0.05)  # the members really differ
    np.testing.assert_allclose(joined @ joined.T, (cosines[0] + cosines[1]) / 2, atol=1e-5)

    config = tomllib.loads((tmp_path / "ens" / "run.toml").read_text())
    assert config["data"] == {"image_size": SIZE, "crop": "margin", "margin": 0.2, "pack": "/data/pack"}
    assert [m["model_sha256"] for m in config["ensemble"]["members"]] == [
        file_sha256(run / "embedder.keras") for run in members
    ]
    embedder = load_embedder(tmp_path / "ens", None)  # what eval, embed, search and export use
    assert embedder.embedding_size == 40 and embedder.prep.image_size == SIZE


def test_ensemble_refuses_members_of_different_face_crops(tmp_path):
    first = member_run(tmp_path / "a", 1)
    other = member_run(tmp_path / "b", 2, crop="align")
    result = invoke(first, other, "--run", tmp_path / "ens")
    assert result.exit_code != 0
    assert "trained on different face crops" in " ".join(result.stderr.split())
    assert not (tmp_path / "ens").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary folder left


def test_ensemble_refuses_one_member_a_repeated_or_missing_run_and_a_foreign_folder(tmp_path):
    first = member_run(tmp_path / "a", 1)
    result = invoke(first, "--run", tmp_path / "ens")
    assert result.exit_code != 0 and "at least two members" in " ".join(result.stderr.split())
    result = invoke(first, first, "--run", tmp_path / "ens")
    assert result.exit_code != 0 and "holds the same model as" in " ".join(result.stderr.split())
    result = invoke(first, tmp_path / "nowhere", "--run", tmp_path / "ens")
    assert result.exit_code != 0 and "no such run directory" in " ".join(result.stderr.split())

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    second = member_run(tmp_path / "b", 2)
    result = invoke(first, second, "--run", foreign)
    assert result.exit_code != 0 and "not written by ffem" in " ".join(result.stderr.split())
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
