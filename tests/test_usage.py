"""Using a model through the CLI: calibrate → export → verify, pairs, a growing gallery, open-set search and eval."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import skimage.data
from eval_fixtures import make_run
from PIL import Image
from typer.testing import CliRunner

from ffem_cli.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The one ``error:`` line (after any progress bar), whitespace-normalised."""
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error")]
    assert len(lines) == 1 and result.stderr.strip().endswith(lines[0]) and "Traceback" not in result.output, (
        result.stderr
    )
    return " ".join(lines[0].split())


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, synthetic_faces):
    root, _ = synthetic_faces
    run = make_run(tmp_path_factory.mktemp("usage"))
    result = invoke("calibrate", "--run", run, "--root", root)
    assert result.exit_code == 0, result.output
    return run, root


def test_calibrate_on_a_folder_uses_all_pairs_and_writes_thresholds(calibrated):
    from ffem_cli.images import scan_identity_folder
    from ffem_cli.inference import embedding, thresholds
    from ffem_cli.inference.models import load_embedder

    run, root = calibrated
    record = json.loads((run / "calibration.json").read_text())
    assert record["genuine_pairs"] == 6 * 15 and record["impostor_pairs"] == 36 * 35 // 2 - 90
    assert [t["far"] for t in record["thresholds"]] == [0.1, 0.01]
    assert set(record["omitted"]) == {"0.001", "0.0001", "1e-05", "1e-06"}
    with Image.open(run / "calibration_det.png") as image:
        assert image.format == "PNG"
    folder = scan_identity_folder(root)
    embedder = load_embedder(run, None)
    vectors = embedding.compute_embeddings(embedder, embedding.folder_sources(root, folder.paths)).vectors
    labels = np.asarray(folder.labels)
    scores = vectors @ vectors.T
    upper = np.triu(np.ones_like(scores, bool), k=1)
    impostor = scores[upper & (labels[:, None] != labels[None, :])]
    for entry in record["thresholds"]:
        assert entry["threshold"] == pytest.approx(thresholds.threshold_at_far(impostor, entry["far"]), abs=1e-6)


def test_export_carries_the_calibration_and_tflite_verifies_alike(calibrated, tmp_path):
    run, root = calibrated
    result = invoke("export", "--run", run, "-f", "tflite")
    assert result.exit_code == 0, result.output
    tflite = run / "export" / "model.tflite"
    meta = json.loads((tflite.parent / "model.tflite.json").read_text())
    assert meta["calibration"] == json.loads((run / "calibration.json").read_text())
    pairs = [(root / "synthetic_1" / "000.jpg", root / "synthetic_1" / "003.jpg"),
             (root / "synthetic_1" / "000.jpg", root / "synthetic_4" / "002.jpg")]  # fmt: skip
    for first, second in pairs:
        for far in ("0.1", "0.01"):
            on_run = invoke("verify", first, second, "--run", run, "--far", far)
            on_tflite = invoke("verify", first, second, "--model", tflite, "--far", far)
            assert on_run.exit_code == 0 and on_tflite.exit_code == 0, on_run.output + on_tflite.output
            decision = [line.split("decision ")[1].split()[0] for line in (on_run.stdout, on_tflite.stdout)]
            threshold = [line.split("threshold ")[1].split()[0] for line in (on_run.stdout, on_tflite.stdout)]
            assert decision[0] == decision[1] and threshold[0] == threshold[1]
    result = invoke("verify", *pairs[0], "--run", run, "--far", "1e-4")
    assert "no calibrated threshold at FAR 0.0001 (available: 0.1, 0.01)" in one_error_line(result)


def test_verify_without_a_face_is_one_line_and_status_2(calibrated, tmp_path):
    run, root = calibrated
    blank = tmp_path / "wall.jpg"
    Image.new("RGB", (160, 160), (128, 128, 128)).save(blank)
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    result = invoke("verify", photo, blank, "--run", run, "--detect", "--threshold", "0.5")
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: {blank}: no face found"


def test_pairs_command_writes_disjoint_folds_and_refuses_too_many(calibrated, tmp_path):
    from ffem_cli.evaluate.pairfiles import read_label_pairs, read_lfw_pairs

    run, root = calibrated
    listed = tmp_path / "pairs.csv"
    result = invoke("pairs", root, "-o", listed, "--pairs", 30, "--folds", 3)
    assert result.exit_code == 0, result.output
    pairs = read_label_pairs(listed)
    assert pairs.same.sum() == 30 and (~pairs.same).sum() == 30
    assert all(
        (a.split("/")[0] == b.split("/")[0]) == s for a, b, s in zip(pairs.first, pairs.second, pairs.same, strict=True)
    )
    result = invoke("calibrate", "--run", run, "--pairs", listed, "--root", root)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "calibration.json").read_text())["source"]["kind"] == "pairs"
    result = invoke("pairs", root, "-o", tmp_path / "big.csv", "--pairs", 1000, "--folds", 3)
    assert result.exit_code == 1 and "cannot make 1000 genuine pairs in 3 identity-disjoint folds" in one_error_line(
        result
    )
    assert not (tmp_path / "big.csv").exists()
    result = invoke("pairs", root, "-o", tmp_path / "lfw.txt", "--pairs", 30, "--folds", 3, "--format", "lfw")
    assert "--format lfw needs images named <name>/<name>_<number>.jpg" in one_error_line(result)
    lfw = tmp_path / "lfw"
    for path in sorted(root.glob("*/*.jpg")):
        name = path.parent.name.replace("_", "")
        (lfw / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, lfw / name / f"{name}_{int(path.stem) + 1:04d}.jpg")
    result = invoke("pairs", lfw, "-o", tmp_path / "lfw.txt", "--pairs", 30, "--folds", 3, "--format", "lfw")
    assert result.exit_code == 0, result.output
    parsed = read_lfw_pairs(tmp_path / "lfw.txt")
    assert len(parsed) == 60 and np.bincount(parsed.folds).tolist() == [20, 20, 20]
    # run from the start of the module: the folder calibration is restored for the other tests
    assert invoke("calibrate", "--run", run, "--root", root).exit_code == 0


def test_gallery_grows_by_content_and_refuses_another_model(calibrated, tmp_path):
    run, root = calibrated
    gallery = tmp_path / "gallery.parquet"
    first = tmp_path / "first"
    shutil.copytree(root / "synthetic_0", first / "synthetic_0")
    shutil.copytree(root / "synthetic_1", first / "synthetic_1")
    assert invoke("embed", first, "--run", run, "--append", gallery).exit_code == 0
    before = pd.read_parquet(gallery)
    result = invoke("embed", first, "--run", run, "--append", gallery)
    assert result.exit_code == 0 and "added 0 of 12 images" in " ".join(result.stderr.split())
    assert pd.read_parquet(gallery).equals(before)
    second = tmp_path / "second"
    shutil.copytree(root / "synthetic_2", second / "synthetic_2")
    shutil.copy(
        root / "synthetic_0" / "000.jpg", second / "synthetic_2" / "copy-of-someone.jpg"
    )  # same content: skipped
    result = invoke("embed", second, "--run", run, "--append", gallery)
    assert result.exit_code == 0, result.output
    grown = pd.read_parquet(gallery)
    assert len(grown) == 18 and sorted(grown["label"].unique()) == [0, 1, 2]
    assert grown.iloc[:12].drop(columns="label").equals(before.drop(columns="label"))
    other = make_run(tmp_path / "other", seed=1)
    result = invoke("embed", second, "--run", other, "--append", gallery)
    assert "the gallery was embedded with another model" in one_error_line(result)
    result = invoke("embed", second, "--run", run, "--append", gallery, "--flip")
    assert "the gallery's faces were prepared differently" in one_error_line(result)
    assert pd.read_parquet(gallery).equals(grown)
    listing = invoke("gallery", gallery)
    assert listing.exit_code == 0 and "synthetic_2" in listing.stdout and "3 identities" in listing.stdout
    assert invoke("gallery", gallery, "--remove", "synthetic_1").exit_code == 0
    assert sorted(pd.read_parquet(gallery)["identity"].unique()) == ["synthetic_0", "synthetic_2"]
    assert "no identity 'nobody'" in one_error_line(invoke("gallery", gallery, "--remove", "nobody"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_open_set_search_answers_unknown_below_the_threshold(calibrated, tmp_path):
    run, root = calibrated
    gallery = tmp_path / "gallery.parquet"
    assert invoke("embed", root, "--run", run, "-o", gallery).exit_code == 0
    query = root / "synthetic_3" / "001.jpg"
    strict = invoke("search", query, "--gallery", gallery, "--threshold", 1.5)
    assert strict.exit_code == 0 and "answer: unknown" in strict.stdout
    loose = invoke("search", query, "--gallery", gallery, "--threshold", -1)
    assert "answer: synthetic_3" in loose.stdout
    calibrated_far = invoke("search", query, "--gallery", gallery, "--far", 0.1)
    assert calibrated_far.exit_code == 0 and "FAR 0.1 (calibrated" in calibrated_far.stdout


def test_eval_folder_open_set_writes_report_and_curve(calibrated, tmp_path):
    run, root = calibrated
    out = tmp_path / "open"
    result = invoke("eval", "folder", "--root", root, "--run", run, "--open-set", "--output-dir", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["enrolled_identities"] == 3 and report["unknown_identities"] == 3
    assert report["mated_probes"] == 15 and report["nonmated_probes"] == 18
    assert 0.0 <= report["rank1_identification_rate"] <= 1.0
    assert set(report["dir_at_fpir_omitted"]) == {"0.1", "0.01", "0.001"}
    assert (out / "dir_fpir.png").is_file() and (out / "probes.csv").is_file()


def test_calibrate_and_pairs_from_a_pack(calibrated, synthetic_faces, tmp_path):
    from ffem_cli.data.pack import PackSettings, pack
    from ffem_cli.evaluate.pairfiles import read_label_pairs

    run, root = calibrated
    _, image_list = synthetic_faces
    packed = tmp_path / "pack"
    pack(image_list, root, packed, PackSettings(image_size=32, shards=2), workers=1)
    result = invoke("calibrate", "--run", run, "--pack", packed, "--impostors", 100, "--seed", 1)
    assert result.exit_code == 0, result.output
    record = json.loads((run / "calibration.json").read_text())
    assert record["source"]["kind"] == "pack" and record["genuine_pairs"] == 90 and record["impostor_pairs"] == 100
    listed = tmp_path / "pairs.csv"
    assert invoke("pairs", packed, "-o", listed, "--pairs", 20, "--folds", 2).exit_code == 0
    assert set(read_label_pairs(listed).first) <= {p.relative_to(root).as_posix() for p in root.glob("*/*.jpg")}
    wrong = tmp_path / "pack64"
    pack(image_list, root, wrong, PackSettings(image_size=64, shards=1), workers=1)
    result = invoke("calibrate", "--run", run, "--pack", wrong)
    assert "faces were packed as 64 px, crop margin, margin 0.2 but the model's faces are 32 px" in one_error_line(
        result
    )
    assert (
        invoke("calibrate", "--run", run, "--root", root).exit_code == 0
    )  # the folder calibration again, for the other tests


def test_calibrate_on_an_insightface_bin(tmp_path):
    from eval_fixtures import write_bin

    from ffem_cli.evaluate.binset import decode_faces, read_bin
    from ffem_cli.inference.embedding import embed_faces
    from ffem_cli.inference.models import load_embedder

    run = make_run(tmp_path / "r")
    bin_path = tmp_path / "lfw.bin"
    write_bin(bin_path, pairs=24, seed=1, as_array=False)
    result = invoke("calibrate", "--run", run, "--bin", bin_path)
    assert result.exit_code == 0, result.output
    assert "trained on 'margin' crops" in " ".join(result.stderr.split())
    record = json.loads((run / "calibration.json").read_text())
    assert record["source"]["kind"] == "bin" and record["genuine_pairs"] == 12 and record["impostor_pairs"] == 12
    embedder = load_embedder(run, None)
    faces = decode_faces(read_bin(bin_path), embedder.prep.image_size)
    vectors = embed_faces(embedder.model, faces, False)
    scores = np.sum(vectors[0::2] * vectors[1::2], axis=1)
    from ffem_cli.evaluate.metrics import equal_error_rate

    same = read_bin(bin_path).issame
    assert record["eer"]["rate"] == pytest.approx(equal_error_rate(scores, same)[0], abs=1e-6)
    forged = tmp_path / "evil.bin"
    forged.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    result = invoke("calibrate", "--run", run, "--bin", forged)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert one_error_line(result).startswith("error:")
