"""LFW: parsing of the real pair/people files, the protocol on a small LFW-shaped tree, errors,
and --detect with the real MTCNN on a few real LFW photos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from eval_fixtures import make_run
from PIL import Image
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data import synthetic
from ffem_cli.errors import FfemError
from ffem_cli.evaluate import lfw, pairfiles

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.realdata
def test_real_lfw_view2_files(lfw_root):
    pairs = pairfiles.read_lfw_pairs(lfw_root / "pairs.txt")
    assert len(pairs) == 6000 and int(pairs.same.sum()) == 3000
    assert np.array_equal(np.bincount(pairs.folds), np.full(10, 600))
    assert pairs.same[:300].all() and not pairs.same[300:600].any()
    first = (lfw_root / "pairs.txt").read_text().splitlines()[1].split("\t")
    assert pairs.first[0] == f"{first[0]}/{first[0]}_{int(first[1]):04d}.jpg"
    assert pairs.lines[0] == 2
    pairfiles.check_images_exist(pairs, lfw.image_dir(lfw_root))
    people = pairfiles.read_lfw_people(lfw_root / "people.txt")
    assert len(people) == 10 and sum(len(f) for f in people) == 5749
    assert sum(sum(f.values()) for f in people) == 13233
    lfw._check_people(pairs, lfw_root / "people.txt")  # every pair of fold k uses people of fold k


@pytest.mark.realdata
def test_real_lfw_view1_files(lfw_root):
    train = pairfiles.read_lfw_pairs(lfw_root / "pairsDevTrain.txt")
    test = pairfiles.read_lfw_pairs(lfw_root / "pairsDevTest.txt")
    assert (len(train), int(train.same.sum())) == (2200, 1100)
    assert (len(test), int(test.same.sum())) == (1000, 500)
    assert set(train.folds) == {0}
    dev_train = pairfiles.read_lfw_people(lfw_root / "peopleDevTrain.txt")
    dev_test = pairfiles.read_lfw_people(lfw_root / "peopleDevTest.txt")
    assert (len(dev_train[0]), len(dev_test[0])) == (4038, 1711)
    assert not set(dev_train[0]) & set(dev_test[0])


NAMES = ["Ada_Example", "Bo_Sample", "Cy_Placeholder", "Di_Synthetic"]


@pytest.fixture(scope="module")
def mini_lfw(tmp_path_factory):
    """An LFW-shaped tree of drawn faces: images/<Name>/<Name>_000N.jpg, pairs.txt (10 folds x 1+1), View 1 files."""
    root = tmp_path_factory.mktemp("lfw")
    rng = np.random.default_rng(4)
    for name in NAMES:
        person = synthetic.make_identity(rng)
        (root / "images" / name).mkdir(parents=True)
        for n in (1, 2, 3):
            pixels, _ = synthetic.render(person, rng, canvas=250)
            Image.fromarray(pixels).save(root / "images" / name / f"{name}_{n:04d}.jpg")
    lines = ["10\t1"]
    for fold in range(10):
        a, b = NAMES[fold % 4], NAMES[(fold + 1) % 4]
        lines += [f"{a}\t1\t{2 + fold % 2}", f"{a}\t{1 + fold % 3}\t{b}\t2"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    (root / "pairsDevTrain.txt").write_text(
        f"2\n{NAMES[0]}\t1\t2\n{NAMES[1]}\t1\t3\n{NAMES[0]}\t1\t{NAMES[1]}\t1\n{NAMES[2]}\t1\t{NAMES[3]}\t1\n"
    )
    (root / "pairsDevTest.txt").write_text(
        f"2\n{NAMES[2]}\t1\t2\n{NAMES[3]}\t2\t3\n{NAMES[0]}\t2\t{NAMES[3]}\t1\n{NAMES[1]}\t2\t{NAMES[2]}\t3\n"
    )
    return root, make_run(root)


def test_lfw_view2_end_to_end(mini_lfw, tmp_path):
    root, run = mini_lfw
    out = tmp_path / "lfw"
    result = invoke("eval", "lfw", "--root", root, "--run", run, "--output-dir", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["view"] == 2 and report["pairs"] == 20
    assert len(report["accuracy"]["folds"]) == 10
    assert report["accuracy"]["mean"] == pytest.approx(np.mean(report["accuracy"]["folds"]))
    assert report["val_at_far"]["far_target"] == 1e-3 and 0 <= report["val_at_far"]["val"] <= 1
    assert report["preparation"]["face_box"] == list(lfw.LFW_FACE_BOX)
    with Image.open(out / "roc.png") as image:
        assert image.format == "PNG"
    assert len((out / "folds.csv").read_text().splitlines()) == 11
    assert "VAL@FAR=0.001" in result.output


def test_lfw_view1_threshold_from_dev_train(mini_lfw, tmp_path):
    root, run = mini_lfw
    out = tmp_path / "lfw1"
    result = invoke("eval", "lfw", "--root", root, "--run", run, "--view", 1, "--output-dir", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["view"] == 1 and report["pairs"] == 4
    assert "threshold" in report["accuracy"] and report["pairs_file"].endswith("pairsDevTest.txt")


def test_lfw_file_errors(tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text("10\t300\nA\t1\t2\n")
    with pytest.raises(FfemError) as error:
        pairfiles.read_lfw_pairs(bad)
    assert str(error.value) == f"{bad}: the header '10 300' announces 6000 pairs but the file has 1"
    bad.write_text("1\nA\t1\t2\nA\t1\tB\t2\tC\n")
    with pytest.raises(FfemError) as error:
        pairfiles.read_lfw_pairs(bad)
    assert str(error.value) == f"{bad} line 3: expected 'name n1 n2' or 'name1 n1 name2 n2', got 5 fields"
    bad.write_text("1\nA\tx\t2\nA\t1\tB\t2\n")
    with pytest.raises(FfemError, match="line 2: image number 'x' is not an integer"):
        pairfiles.read_lfw_pairs(bad)


def test_lfw_people_file_contradicting_pairs(mini_lfw, tmp_path):
    root, run = mini_lfw
    copy = shutil.copytree(root, tmp_path / "lfw", ignore=shutil.ignore_patterns("run"))
    (copy / "people.txt").write_text("10\n" + "1\nNobody\t1\n" * 10)
    result = invoke("eval", "lfw", "--root", copy, "--run", run, "--output-dir", tmp_path / "o")
    assert result.exit_code == 1
    assert f"error: {copy / 'pairs.txt'} line 2: {NAMES[0]} is not in fold 1 of {copy / 'people.txt'}" in " ".join(
        result.output.split()
    )


@pytest.mark.realdata
def test_detect_with_real_mtcnn_counts_images_without_face(lfw_root, tmp_path, mini_lfw):
    _, run = mini_lfw
    root = tmp_path / "photos"
    for name in ("Aaron_Peirsol", "Abdullah_Gul"):
        (root / name).mkdir(parents=True)
        for image in sorted((lfw_root / "images" / name).iterdir())[:2]:
            shutil.copy(image, root / name / image.name)
    Image.new("RGB", (250, 250), (128, 128, 128)).save(root / "Abdullah_Gul" / "blank.jpg")
    out = tmp_path / "out"
    result = invoke("eval", "folder", "--root", root, "--run", run, "--detect", "--output-dir", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 5 and report["images_without_face"] == 1
    assert report["queries"] == 5 and report["queries_without_face"] == 1
