"""Figures comparable with the seeds' tables: stratified folds, EE488B's EER and score file,
the seed's RFW Recall@1 and crop, LFW on 112x112 crops and MassFace's pair layout, flip modes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from eval_fixtures import make_rfw, make_run
from PIL import Image
from sklearn.metrics import roc_curve as sk_roc_curve
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data import synthetic
from ffem_cli.data.crop import crop_face, seed_box_from_landmarks
from ffem_cli.errors import FfemError
from ffem_cli.evaluate import metrics, pairfiles
from ffem_cli.inference.embedding import embed_faces

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("seedcompat")
    return {"run": make_run(root), "rfw": make_rfw(root), "root": root}


# --- folds -----------------------------------------------------------------


def test_stratified_folds_are_the_official_lfw_folds():
    same = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    assert np.array_equal(metrics.stratified_folds(same), np.arange(6000) // 600)


def test_positives_first_list_gets_folds_holding_both_kinds():
    same = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    folds = metrics.stratified_folds(same)
    for fold in range(10):
        assert same[folds == fold].sum() == 5 and (~same[folds == fold]).sum() == 5
    # the old consecutive-lines folds held one kind each: perfectly separable scores scored 0.5 or worse
    scores = np.where(same, 0.9, 0.1) + np.random.default_rng(0).normal(0, 0.01, 100)
    assert metrics.kfold_accuracy(scores, same, folds).mean == 1.0
    with pytest.raises(ValueError, match="fold 1 holds only same-person pairs"):
        metrics.kfold_accuracy(scores, same, np.arange(100) // 10)


def test_too_few_pairs_of_a_kind_for_ten_folds():
    with pytest.raises(ValueError, match="10 folds need at least 10 different-person pairs, the list has 3"):
        metrics.stratified_folds(np.r_[np.ones(20, bool), np.zeros(3, bool)])


def test_rfw_pairs_file_ordered_positives_first_is_scored_on_mixed_folds(tmp_path):
    path = tmp_path / "African_pairs.txt"
    lines = [f"m.a{i}\t1\t2" for i in range(30)] + [f"m.a{i}\t1\tm.b{i}\t1" for i in range(30)]
    path.write_text("\n".join(lines) + "\n")
    pairs = pairfiles.read_rfw_pairs(path)
    for fold in range(10):
        assert set(pairs.same[pairs.folds == fold].tolist()) == {True, False}


def test_ee488b_list_gets_ten_folds_or_one_when_small(tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("".join(f"{int(i < 20)},a/{i}.jpg,b/{i}.jpg\n" for i in range(40)))
    assert sorted(set(pairfiles.read_label_pairs(big).folds.tolist())) == list(range(10))
    small = tmp_path / "small.csv"
    small.write_text("1,a.jpg,b.jpg\n0,a.jpg,c.jpg\n")
    assert set(pairfiles.read_label_pairs(small).folds.tolist()) == {0}


# --- EE488B's EER ------------------------------------------------------------


def ee488b_transcription(scores, labels):
    """voxceleb_trainer's tuneThresholdfromScore: sklearn's ROC, nanargmin |fnr - fpr|, max of the two, x100."""
    fpr, tpr, _ = sk_roc_curve(labels, scores, pos_label=1)
    fnr = (1 - tpr) * 100
    fpr = fpr * 100
    i = np.nanargmin(np.absolute(fnr - fpr))
    return max(fpr[i], fnr[i])


@pytest.mark.parametrize("seed", range(6))
def test_ee488b_eer_matches_the_trainer(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.4
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes ties and straight runs
    assert metrics.ee488b_eer(scores, labels) == pytest.approx(ee488b_transcription(scores, labels))
    assert metrics.ee488b_eer(scores, labels) >= 100 * metrics.equal_error_rate(scores, labels)[0] - 1e-9


# --- the seed's crop ---------------------------------------------------------


def seed_rect_transcription(flat):
    """The seed's generate_bbox rect_from_landmark on 10 numbers (x1, y1, ..., x5, y5)."""
    xs, ys = flat[0::2], flat[1::2]
    min_x, min_y = flat[np.argmin(xs) * 2], flat[np.argmin(ys) * 2 + 1]
    max_x, max_y = flat[np.argmax(xs) * 2], flat[np.argmax(ys) * 2 + 1]
    width, height = (max_x - min_x) / 1.5, (max_y - min_y) / 1.5
    min_x, max_x, min_y, max_y = min_x - width, max_x + width, min_y - height, max_y + height
    left = np.linalg.norm(flat[0:2] - flat[4:6])
    right = np.linalg.norm(flat[2:4] - flat[4:6])
    shift = -(1 - right / left) * 1.2 if left - right > 0 else (1 - left / right) * 1.2
    return np.array([min_x + width * shift, min_y, max_x + width * shift, max_y], dtype=np.int32)


@pytest.mark.parametrize("seed", range(5))
def test_seed_box_matches_the_seed(seed):
    rng = np.random.default_rng(seed)
    marks = np.array([[40, 50], [70, 50], [55, 65], [43, 85], [68, 85]], float) + rng.normal(0, 6, (5, 2))
    assert seed_box_from_landmarks(marks) == tuple(seed_rect_transcription(marks.ravel()).tolist())


def test_stretch_crop_keeps_no_aspect_and_adds_no_margin():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :100] = 255  # left half white
    face = crop_face(image, (50, 0, 150, 100), size=20, stretch=True)
    assert face.shape == (20, 20, 3)
    assert face[:, :9].min() == 255 and face[:, 11:].max() == 0  # the box's halves fill the two halves


# --- flip modes ----------------------------------------------------------------


class _Halves:
    """A fake model: the mean colour of the left and right halves, as a unit 2-vector."""

    def predict_on_batch(self, batch):
        half = batch.shape[2] // 2
        v = np.stack([batch[:, :, :half].mean(axis=(1, 2, 3)), batch[:, :, half:].mean(axis=(1, 2, 3))], axis=1) + 1
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_flip_concat_gives_twice_the_dimension_and_the_mean_cosine():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    plain = _Halves().predict_on_batch(faces.astype(np.float32))
    mirrored = _Halves().predict_on_batch(faces[:, :, ::-1].astype(np.float32))
    concat = embed_faces(_Halves(), faces, flip=True, flip_mode="concat")
    assert concat.shape == (3, 4)
    assert np.allclose(np.linalg.norm(concat, axis=1), 1)
    expected = (plain[0] @ plain[1] + mirrored[0] @ mirrored[1]) / 2
    assert concat[0] @ concat[1] == pytest.approx(expected, abs=1e-6)
    summed = embed_faces(_Halves(), faces, flip=True, flip_mode="sum")
    assert summed.shape == (3, 2)


# --- end to end ------------------------------------------------------------------


def test_rfw_reports_both_recalls_seed_crop_and_shared_identities(workspace, tmp_path):
    rfw = shutil.copytree(workspace["rfw"], tmp_path / "RFW")
    data = rfw / "images" / "test" / "data"
    shared = sorted(p.name for p in (data / "Asian").iterdir())[0]
    shutil.copytree(data / "Asian" / shared, data / "Indian" / shared)
    out = tmp_path / "out"
    result = invoke(
        "eval", "rfw", "--root", rfw, "--run", workspace["run"], "--crop", "seed", "--output-dir", out, "--no-cache"
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["preparation"]["crop"] == "seed"
    assert report["identities_in_several_races"] == {shared: ["Asian", "Indian"]}
    assert "listed under more than one race" in " ".join(result.output.split())
    for race in report["races"]:
        assert 0 <= race["recall@1 (seed)"] <= race["recall@1"]
    assert "stratified" in report["definition"] and "self-match" in report["definition"]


def test_rfw_unknown_crop_is_one_line(workspace, tmp_path):
    result = invoke(
        "eval",
        "rfw",
        "--root",
        workspace["rfw"],
        "--run",
        workspace["run"],
        "--crop",
        "square",
        "--output-dir",
        tmp_path / "o",
    )
    assert result.exit_code == 1
    assert "error: --crop must be 'seed'" in result.output


def _lfw_tree(root, side: int, massface: bool):
    """4 people x 3 drawn faces of ``side`` pixels; an LFW pairs.txt (one fold) or MassFace's pair folders."""
    rng = np.random.default_rng(3)
    names = ["Ann_A", "Ben_B", "Cat_C", "Dan_D"]
    photos = {}
    for name in names:
        person = synthetic.make_identity(rng)
        photos[name] = [synthetic.render(person, rng, canvas=side)[0] for _ in range(3)]
    pairs = [(names[i % 4], 0, names[i % 4], 1 + i % 2) for i in range(6)] + [
        (names[i % 4], 0, names[(i + 1) % 4], 2) for i in range(6)
    ]
    if massface:
        lines = []
        for index, (a, i, b, j) in enumerate(pairs):
            (root / str(index)).mkdir(parents=True)
            Image.fromarray(photos[a][i]).save(root / str(index) / f"{a}_{i + 1:04d}.png")
            Image.fromarray(photos[b][j]).save(root / str(index) / f"{b}_{j + 1:04d}_.png")
            lines.append(f"{index} {int(a == b)}")
        (root / "lfw_pair.txt").write_text("\n".join(lines) + "\n")
        return
    for name in names:
        (root / name).mkdir(parents=True)
        for n, pixels in enumerate(photos[name], start=1):
            Image.fromarray(pixels).save(root / name / f"{name}_{n:04d}.jpg")
    body = [f"{a}\t{i + 1}\t{j + 1}" if a == b else f"{a}\t{i + 1}\t{b}\t{j + 1}" for a, i, b, j in pairs]
    (root / "pairs.txt").write_text("6\n" + "\n".join(body) + "\n")


def test_lfw_one_fold_pairs_file_on_112_crops(workspace, tmp_path):
    root = tmp_path / "lfw112"
    _lfw_tree(root, 112, massface=False)
    out = tmp_path / "out"
    result = invoke("eval", "lfw", "--root", root, "--run", workspace["run"], "--output-dir", out, "--no-cache")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    pairs = pairfiles.read_lfw_pairs(root / "pairs.txt")
    assert report["preparation"]["faces"] == {"whole image (face crop)": len(set(pairs.first + pairs.second))}
    assert report["preparation"]["face_box"] is None
    assert len(report["accuracy"]["folds"]) == 1 and "chosen on this list itself" in report["accuracy"]["fold_rule"]
    assert "one fold" in result.output


def test_lfw_massface_pair_folders_with_concatenated_flips(workspace, tmp_path):
    root = tmp_path / "massface"
    _lfw_tree(root, 112, massface=True)
    out = tmp_path / "out"
    result = invoke(
        "eval",
        "lfw",
        "--root",
        root,
        "--run",
        workspace["run"],
        "--flip",
        "--flip-mode",
        "concat",
        "--output-dir",
        out,
        "--no-cache",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == 12 and report["same_pairs"] == 6
    assert report["pairs_file"].endswith("lfw_pair.txt") and report["preparation"]["flip_mode"] == "concat"
    assert len(report["accuracy"]["folds"]) == 1  # 6 + 6 pairs: too few for 10 folds


def test_massface_pair_folder_must_hold_two_images(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "a.png").write_bytes(b"")
    (tmp_path / "lfw_pair.txt").write_text("0 1\n")
    with pytest.raises(FfemError, match="must hold exactly two images, found 1"):
        pairfiles.read_massface_pairs(tmp_path / "lfw_pair.txt", tmp_path)
    (tmp_path / "lfw_pair.txt").write_text("../x 1\n")
    with pytest.raises(FfemError, match="must be a plain folder name"):
        pairfiles.read_massface_pairs(tmp_path / "lfw_pair.txt", tmp_path)


def test_pair_list_ee488b_score_file_and_figures(workspace, tmp_path, synthetic_faces):
    root, _ = synthetic_faces
    people = sorted(p.name for p in root.iterdir() if p.is_dir())
    lines = [
        f"1,{p}/{sorted(x.name for x in (root / p).iterdir())[0]},{p}/{sorted(x.name for x in (root / p).iterdir())[1]}"
        for p in people
    ]
    lines += [
        f"0,{a}/{sorted(x.name for x in (root / a).iterdir())[0]},{b}/{sorted(x.name for x in (root / b).iterdir())[0]}"
        for a, b in zip(people, people[1:], strict=False)
    ]
    pair_list = tmp_path / "list.csv"
    pair_list.write_text("\n".join(lines) + "\n")
    scores = tmp_path / "scores.csv"
    result = invoke(
        "eval", "pairs", "--list", pair_list, "--root", root, "--run", workspace["run"], "--output", scores,
        "--output-format", "ee488b", "--output-dir", tmp_path / "out", "--no-cache",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in scores.read_text().splitlines()]
    assert len(rows) == len(lines) and all(len(r) == 4 for r in rows)
    assert [r[1] for r in rows] == [line[0] for line in lines] and [r[2] for r in rows] == [
        line.split(",")[1] for line in lines
    ]
    float(rows[0][0])  # headerless: the first field is a score
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["eer_ee488b_percent"] >= 100 * report["eer"] - 1e-9
    assert "accuracy" in report and "EER (EE488B, %)" in result.output
