"""The whole chain through the ``ffem`` command, as a user runs it:
pack → train (classifier) → train (metric, --init-from) → eval → export → embed → search → map.

Each command consumes what the previous one wrote (the pack manifest, the
run's ``run.toml`` and ``embedder.keras``), so this guards the contracts
between commands rather than any one of them (each has its own tests).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data.crop import crop_face
from ffem_cli.data.image_list import load_image_list
from ffem_cli.images import read_rgb
from ffem_cli.rundir import RunDir

runner = CliRunner()
SIZE = 64


def ffem(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_pack_train_eval_export_embed_search_map(tmp_path, synthetic_faces):
    root, image_list = synthetic_faces
    pack, runs = tmp_path / "pack", tmp_path / "runs"

    ffem("pack", image_list, "--root", root, "--output", pack, "--align", "--size", SIZE, "--shards", 2, "--workers", 1)
    ffem("train", "--data", pack, "--run", runs / "cls", "--stage", "classifier", "--backbone", "tiny",
         "--embedding-size", 32, "--epochs", 2, "--batch-size", 12, "--lr", 3e-3)  # fmt: skip
    ffem("train", "--data", pack, "--run", runs / "arc", "--stage", "metric", "--init-from", runs / "cls",
         "--epochs", 1, "--batch-size", 12, "--lr", 1e-2)  # fmt: skip

    run = RunDir(runs / "arc")
    config = run.read_config()
    assert config["data"]["crop"] == "align" and config["data"]["image_size"] == SIZE
    assert config["model"]["backbone"] == "tiny" and config["model"]["embedding_size"] == 32
    assert run.embedder_path.is_file() and run.metrics_path.is_file()

    ffem("eval", "folder", "--root", root, "--faces", image_list, "--run", run.path)
    report = json.loads((run.eval_dir("folder") / "report.json").read_text())
    assert report["preparation"]["crop"] == "align" and report["preparation"]["image_size"] == SIZE
    assert report["images"] == 36 and report["images_without_face"] == 0
    assert report["recall@1"] > 1 / 6  # above chance for 6 identities after three short epochs

    ffem("export", "--run", run.path, "-f", "tflite", "-f", "onnx", "--calibration", pack)
    parity = json.loads((run.export_dir / "parity.json").read_text())
    assert set(parity["exports"]) == {"model.tflite", "model.onnx"}
    assert all(entry["min_cosine"] >= 0.9999 for entry in parity["exports"].values())

    gallery = tmp_path / "gallery.parquet"
    ffem("embed", root, "--faces", image_list, "--run", run.path, "--output", gallery)
    table = pd.read_parquet(gallery)
    assert len(table) == 36 and table["face_found"].all() and len(table["embedding"][0]) == 32

    rel, entry = sorted(load_image_list(image_list).items())[0]
    query = tmp_path / "query.png"
    Image.fromarray(crop_face(read_rgb(root / rel), entry.box, entry.landmarks, size=SIZE, align=True)).save(query)
    strip = tmp_path / "strip.png"
    output = ffem("search", query, "--gallery", gallery, "--run", run.path, "-k", 3, "--output", strip)
    assert rel.split("/")[0] in output  # the query's own identity is among the matches
    facemap = tmp_path / "map.png"
    ffem("map", "--gallery", gallery, "--output", facemap, "--size", 400)
    with Image.open(strip) as picture:
        assert picture.format == "PNG"
    with Image.open(facemap) as picture:
        assert picture.size == (400, 400)
    assert np.isfinite(table["embedding"].map(np.linalg.norm)).all()
