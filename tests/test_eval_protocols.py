"""`ffem eval rfw|lfw|pairs|folder` end to end with a tiny model, and their one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from eval_fixtures import IMAGE_SIZE, make_rfw, make_run
from PIL import Image
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data.crop import crop_face
from ffem_cli.images import read_rgb, scan_identity_folder
from ffem_cli.inference import embedding
from ffem_cli.inference.models import load_embedder

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {"run": make_run(root), "rfw": make_rfw(root), "root": root}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] > 100


def test_rfw_end_to_end_matches_brute_force(workspace):
    run, rfw = workspace["run"], workspace["rfw"]
    result = invoke("eval", "rfw", "--root", rfw, "--run", run)
    assert result.exit_code == 0, result.output
    out = run / "eval" / "rfw"
    report = json.loads((out / "report.json").read_text())
    assert [r["race"] for r in report["races"]] == ["African", "Asian", "Caucasian", "Indian"]
    assert is_png(out / "races.png") and is_png(out / "roc.png")
    assert (out / "races.csv").is_file() and (out / "pairs_Indian.csv").is_file()
    assert set(report["fairness"]) == {"recall@1", "recall@1 (seed)", "accuracy"}
    assert "(seed)" in result.output and "best - worst" in result.output  # the header may wrap

    # Recall@1 of one race recomputed directly: landmarks -> box -> crop -> model -> nearest neighbour
    import keras

    model = keras.models.load_model(run / "embedder.keras")
    race_dir = rfw / "images/test/data/Asian"
    folder = scan_identity_folder(race_dir)
    lmk = {}
    for line in (rfw / "images/test/txts/Asian/Asian_lmk.txt").read_text().splitlines():
        fields = line.split()
        lmk[fields[0].rsplit("/", 1)[-1]] = np.array(fields[2:], dtype=float).reshape(5, 2)
    faces = []
    for rel in folder.paths:
        marks = lmk[rel.split("/")[1]]
        box = embedding.box_from_landmarks(marks)
        faces.append(crop_face(read_rgb(race_dir / rel), box, marks, size=IMAGE_SIZE, margin=0.2))
    vectors = np.asarray(model.predict_on_batch(np.stack(faces).astype(np.float32)))
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    labels = np.array(folder.labels)
    queries = [i for i in range(len(labels)) if np.sum(labels == labels[i]) > 1]
    expected = np.mean([labels[np.argmax(sims[q])] == labels[q] for q in queries])
    asian = next(r for r in report["races"] if r["race"] == "Asian")
    assert asian["recall@1"] == pytest.approx(expected)
    # the seed's definition: every image queries, single-image identities are misses
    expected_seed = np.mean([labels[np.argmax(sims[q])] == labels[q] for q in range(len(labels))])
    assert asian["recall@1 (seed)"] == pytest.approx(expected_seed)
    assert asian["recall@1 (seed)"] <= asian["recall@1"]
    assert asian["queries"] == 12 and asian["distractors"] == 1 and asian["pairs"] == 40

    # fairness summary is computed from the per-race numbers
    values = [r["recall@1"] for r in report["races"]]
    assert report["fairness"]["recall@1"]["gap"] == pytest.approx(max(values) - min(values))
    assert report["fairness"]["recall@1"]["std"] == pytest.approx(np.std(values))


def test_second_protocol_run_uses_the_cache(workspace, monkeypatch):
    run, rfw = workspace["run"], workspace["rfw"]
    assert invoke("eval", "rfw", "--root", rfw, "--run", run, "--race", "African").exit_code == 0

    def fail(*args, **kwargs):
        raise AssertionError("embedding recomputed although cached")

    monkeypatch.setattr(embedding, "_embed_uncached", fail)
    result = invoke("eval", "rfw", "--root", rfw, "--run", run, "--race", "African")
    assert result.exit_code == 0, result.output


def test_missing_race_folder(workspace, tmp_path):
    rfw = shutil.copytree(workspace["rfw"], tmp_path / "RFW")
    shutil.rmtree(rfw / "images/test/data/Indian")
    out = tmp_path / "out"
    result = invoke("eval", "rfw", "--root", rfw, "--run", workspace["run"], "--output-dir", out)
    assert result.exit_code == 1
    expected = (
        f"error: {rfw / 'images/test/data/Indian'}: missing race folder (RFW races: African, Asian, Caucasian, Indian)"
    )
    assert expected in " ".join(result.output.split())
    assert not out.exists()


def test_pair_naming_a_missing_image(workspace, tmp_path):
    rfw = shutil.copytree(workspace["rfw"], tmp_path / "RFW")
    pairs = rfw / "images/test/txts/Asian/Asian_pairs.txt"
    lines = pairs.read_text().splitlines()
    name = lines[2].split("\t")[0]
    lines[2] = f"{name}\t1\t{name}\t7"
    pairs.write_text("\n".join(lines) + "\n")
    result = invoke("eval", "rfw", "--root", rfw, "--run", workspace["run"], "--output-dir", tmp_path / "out")
    assert result.exit_code == 1
    message = f"error: {pairs} line 3: image {name}/{name}_0007.jpg not found under {rfw / 'images/test/data/Asian'}"
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_empty_pair_list(workspace, tmp_path, synthetic_faces):
    root, _ = synthetic_faces
    empty = tmp_path / "pairs.csv"
    empty.write_text("\n\n")
    result = invoke(
        "eval", "pairs", "--list", empty, "--root", root, "--run", workspace["run"], "--output-dir", tmp_path / "o"
    )
    assert result.exit_code == 1
    assert f"error: {empty}: empty list (no pairs)" in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def write_pair_list(root, path):
    folder = scan_identity_folder(root)
    by_label = {}
    for rel, label in zip(folder.paths, folder.labels, strict=True):
        by_label.setdefault(label, []).append(rel)
    lines = []
    for label, paths in by_label.items():
        other = by_label[(label + 1) % len(by_label)]
        lines += [
            f"1,{paths[0]},{paths[1]}",
            f"1,{paths[2]},{paths[3]}",
            f"0,{paths[0]},{other[0]}",
            f"0,{paths[1]},{other[2]}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_pair_list_protocol_with_scores_csv(workspace, tmp_path, synthetic_faces):
    import pandas as pd

    root, _ = synthetic_faces
    lines = write_pair_list(root, tmp_path / "pairs.csv")
    scores = tmp_path / "scores.csv"
    out = tmp_path / "out"
    result = invoke("eval", "pairs", "--list", tmp_path / "pairs.csv", "--root", root, "--run", workspace["run"],
                    "--output", scores, "--output-dir", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == len(lines) == 24 and report["different_pairs"] == 12
    # 12 imposter pairs resolve FAR 1e-1 only; the others are omitted with the reason
    assert list(report["tar_at_far"]) == ["0.1"]
    assert report["tar_at_far_omitted"]["0.001"] == "needs >= 1000 imposter pairs, the list has 12"
    assert 0 <= report["eer"] <= 1 and 0 <= report["auc"] <= 1
    table = pd.read_csv(scores)
    assert list(table.columns) == ["label", "first", "second", "score"] and len(table) == 24
    assert table["score"].between(-1.0001, 1.0001).all()
    assert is_png(out / "roc.png")


def test_folder_protocol_with_model_file_and_flip(workspace, tmp_path, synthetic_faces):
    root, _ = synthetic_faces
    out = tmp_path / "folder"
    model = workspace["run"] / "embedder.keras"
    result = invoke("eval", "folder", "--root", root, "--model", model, "--flip", "--output-dir", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["preparation"]["flip"] is True and report["preparation"]["image_size"] == IMAGE_SIZE
    assert report["queries"] == 36 and report["distractors"] == 0
    for key in ("recall@1", "recall@5", "recall@10", "r_precision", "map@r"):
        assert 0.0 <= report[key] <= 1.0
    assert report["recall@1"] <= report["recall@5"] <= report["recall@10"]
    assert (out / "identities.csv").is_file() and (out / "queries.csv").is_file()
    assert is_png(out / "top1_scores.png") and "top1_scores.png" in report["files"]


def test_no_face_found_is_counted_and_scored(workspace, tmp_path, synthetic_faces, monkeypatch):
    root, _ = synthetic_faces
    write_pair_list(root, tmp_path / "pairs.csv")
    # a stand-in for the batched MTCNN that finds a face (the whole image) only in the images of identity 0
    from ffem_cli.images import read_rgb
    from ffem_cli.inference import detection

    def detect_first_identity(paths, *args, **kwargs):
        for index, path in enumerate(paths):
            image = read_rgb(path)
            whole = ((0, 0, image.shape[1], image.shape[0]), None)
            yield index, image, whole if "synthetic_0/" in str(path) else None

    monkeypatch.setattr(detection, "detect_images", detect_first_identity)
    out = tmp_path / "out"
    result = invoke("eval", "pairs", "--list", tmp_path / "pairs.csv", "--root", root, "--run", workspace["run"],
                    "--detect", "--output-dir", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == 24  # nothing dropped
    assert report["pairs_without_face"] == 22  # only the two same pairs of identity 0 have faces on both sides
    assert report["images_without_face"] == len(report["images_without_face_list"]) > 0
    import pandas as pd

    table = pd.read_csv(out / "pairs.csv")
    assert (table.loc[table.face_found == 0, "score"] == -1.0).all()


def test_folder_without_any_query(workspace, tmp_path, synthetic_faces):
    root, _ = synthetic_faces
    lonely = tmp_path / "lonely"
    for person in ("synthetic_0", "synthetic_1"):
        (lonely / person).mkdir(parents=True)
        shutil.copy(root / person / "000.jpg", lonely / person / "000.jpg")
    result = invoke("eval", "folder", "--root", lonely, "--run", workspace["run"], "--output-dir", tmp_path / "o")
    assert result.exit_code == 1
    assert "error: no identity has two or more images: nothing to query" in result.output
    assert not (tmp_path / "o").exists()


def test_folder_with_face_list_uses_its_boxes_and_counts_unlisted_images(workspace, tmp_path, synthetic_faces):
    root, list_path = synthetic_faces
    entries = json.loads(list_path.read_text())
    dropped = sorted(entries)[0]
    del entries[dropped]
    faces = tmp_path / "faces.json"
    faces.write_text(json.dumps(entries))
    out = tmp_path / "folder"
    result = invoke("eval", "folder", "--root", root, "--run", workspace["run"], "--faces", faces, "--output-dir", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["images_without_face"] == 1 and report["queries_without_face"] == 1
    assert report["queries"] == 36  # the unlisted image still counts as a (missed) query

    # the listed faces were cut with the list's boxes: embeddings equal a direct crop -> model
    import keras

    model = keras.models.load_model(workspace["run"] / "embedder.keras")
    rel = sorted(entries)[0]
    e = entries[rel]
    face = crop_face(
        read_rgb(root / rel),
        (e["x1"], e["y1"], e["x2"], e["y2"]),
        np.array(e["landmarks"]),
        size=IMAGE_SIZE,
        margin=0.2,
    )
    expected = model.predict_on_batch(face[None].astype(np.float32))[0]
    sources = embedding.folder_sources(root, [rel], faces)
    embedder = load_embedder(workspace["run"], None)
    got = embedding.compute_embeddings(embedder, sources).vectors[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_output_dir_that_ffem_did_not_write_is_refused_before_any_work(workspace, tmp_path, monkeypatch):
    run, rfw = workspace["run"], workspace["rfw"]

    def fail(*args, **kwargs):
        raise AssertionError("embedded although the output folder is refused")

    monkeypatch.setattr(embedding, "_embed_uncached", fail)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    photos = rfw / "images/test/data/African"
    before = sorted(p.name for p in photos.rglob("*"))
    for output_dir in (user, run, photos):
        result = invoke("eval", "rfw", "--root", rfw, "--run", run, "--race", "African", "--output-dir", output_dir)
        assert result.exit_code == 1
        assert "was not written by ffem" in " ".join(result.output.split()), result.output
    assert (user / "thesis.tex").read_text() == "years of work"
    assert (run / "embedder.keras").is_file() and (run / "run.toml").is_file()
    assert sorted(p.name for p in photos.rglob("*")) == before
    (tmp_path / "file").write_text("x")
    result = invoke("eval", "rfw", "--root", rfw, "--run", run, "--output-dir", tmp_path / "file")
    assert result.exit_code == 1 and "exists and is not a folder" in result.output
    assert (tmp_path / "file").read_text() == "x"


def test_output_dir_dot_is_one_clear_line_and_leaves_nothing(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("eval", "rfw", "--root", workspace["rfw"], "--run", workspace["run"], "--output-dir", ".")
    assert result.exit_code == 1
    assert "is the working folder (or holds it); name a new folder for the output" in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == []


def test_the_cache_stays_inside_the_run_whatever_the_output_dir(workspace, tmp_path):
    run, rfw = workspace["run"], workspace["rfw"]
    out = tmp_path / "reports" / "rfw"
    assert invoke("eval", "rfw", "--root", rfw, "--run", run, "--race", "Asian", "--output-dir", out).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["rfw"]
    assert (run / "eval" / "cache").is_dir()
    again = invoke("eval", "rfw", "--root", rfw, "--run", run, "--race", "Asian", "--output-dir", out)
    assert again.exit_code == 0, again.output  # its own earlier report is replaced


def test_a_report_from_before_the_marker_is_still_replaced(workspace, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"ffem_version": "0.1", "files": ["races.csv"]}))
    (out / "races.csv").write_text("race\n")
    result = invoke(
        "eval", "rfw", "--root", workspace["rfw"], "--run", workspace["run"], "--race", "Asian", "--output-dir", out
    )
    assert result.exit_code == 0, result.output
    assert (out / ".ffem-output").is_file()
