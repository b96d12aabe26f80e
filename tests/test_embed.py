"""`ffem embed` → Parquet gallery, `ffem search` → nearest faces + strip, `ffem map` → PNG of the asked size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from eval_fixtures import make_run
from PIL import Image
from typer.testing import CliRunner

from ffem_cli.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, synthetic_faces):
    root, _ = synthetic_faces
    work = tmp_path_factory.mktemp("embed")
    run = make_run(work)
    output = work / "embeddings.parquet"
    result = invoke("embed", root, "--run", run, "--output", output)
    assert result.exit_code == 0, result.output
    return {"root": root, "run": run, "parquet": output, "work": work}


def test_embed_writes_a_pandas_readable_gallery(gallery):
    table = pd.read_parquet(gallery["parquet"])
    assert list(table.columns) == ["path", "identity", "label", "face_found", "embedding", "sha256"]
    assert len(table) == 36 and table["identity"].nunique() == 6
    assert sorted(table["label"].unique()) == list(range(6))
    vectors = np.stack(table["embedding"].to_numpy())
    assert vectors.shape == (36, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert table["face_found"].all()
    assert not [p for p in gallery["parquet"].parent.iterdir() if p.name.startswith(".tmp-")]


def test_search_finds_the_known_identity_first(gallery, tmp_path):
    original = gallery["root"] / "synthetic_3" / "002.jpg"
    query = tmp_path / "new_photo.jpg"
    Image.open(original).save(query, quality=80)  # a new file of the same person
    strip = tmp_path / "strip.png"
    result = invoke("search", query, "--gallery", gallery["parquet"], "-k", 5, "--output", strip)
    assert result.exit_code == 0, result.output
    assert "synthetic_3" in result.output
    with Image.open(strip) as image:
        assert image.format == "PNG" and image.size == (6 * 160 + 7 * 8, 160 + 34 + 16)

    from ffem_cli.inference import embedding
    from ffem_cli.inference import gallery as core
    from ffem_cli.inference.models import load_embedder

    faces = core.read_gallery(gallery["parquet"])
    embedder = load_embedder(gallery["run"], None)
    matches = core.search(embedder, query, faces, 5)
    assert matches[0]["identity"] == "synthetic_3" and matches[0]["path"] == str(original.resolve())
    assert matches[0]["score"] > 0.99
    # scores are the brute-force cosine similarities, best first
    q = embedding.compute_embeddings(embedder, [embedding.FaceSource(query.resolve())]).vectors[0]
    expected = np.sort(faces.vectors @ q)[::-1][:5]
    assert np.allclose([m["score"] for m in matches], expected, atol=1e-5)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_map_writes_a_png_of_the_requested_size(gallery, method):
    output = gallery["work"] / f"map-{method}.png"
    result = invoke("map", "--gallery", gallery["parquet"], "--output", output, "--method", method, "--size", 640)
    assert result.exit_code == 0, result.output
    with Image.open(output) as image:
        assert image.format == "PNG" and image.size == (640, 640)
        assert len(image.getcolors(640 * 640)) > 50  # thumbnails were drawn, not a blank canvas


def test_search_errors(gallery, tmp_path):
    missing = tmp_path / "nope.parquet"
    query = gallery["root"] / "synthetic_0" / "000.jpg"
    result = invoke("search", query, "--gallery", missing)
    assert result.exit_code == 1
    assert f"error: {missing}: no such gallery file (write one with ffem embed)" in " ".join(result.output.split())
    other = make_run(tmp_path, embedding_size=16, seed=1)
    result = invoke("search", query, "--gallery", gallery["parquet"], "--run", other)
    assert result.exit_code == 1
    assert "the gallery was embedded with another model" in result.output


def test_map_projector_writes_what_tensorboard_reads(gallery, tmp_path):
    import pandas as pd
    from PIL import Image

    folder = tmp_path / "projector"
    result = invoke("map", "--gallery", gallery["parquet"], "--projector", folder)
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(gallery["parquet"])
    table = table[table["face_found"]]
    vectors = np.loadtxt(folder / "embeddings.tsv", delimiter="\t", ndmin=2)
    np.testing.assert_allclose(vectors, np.stack(table["embedding"]), atol=1e-6)
    metadata = (folder / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "identity\tpath" and len(metadata) == len(table) + 1
    assert metadata[1] == f"{table['identity'].iloc[0]}\t{table['path'].iloc[0]}"
    config = (folder / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "embeddings.tsv"' in config and 'metadata_path: "metadata.tsv"' in config
    side = int(config.split("single_image_dim: ")[1].split()[0])
    columns = int(np.ceil(np.sqrt(len(table))))
    assert Image.open(folder / "sprite.png").size == (columns * side, int(np.ceil(len(table) / columns)) * side)
    again = invoke("map", "--gallery", gallery["parquet"], "--projector", folder)  # its own folder: replaced
    assert again.exit_code == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    refused = invoke("map", "--gallery", gallery["parquet"], "--projector", foreign)
    assert refused.exit_code == 1 and "is not a projector folder" in refused.output
    assert invoke("map", "--gallery", gallery["parquet"]).exit_code == 1
