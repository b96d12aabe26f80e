"""`ffem convert vggface2|rfw`: shipped box/landmark files → image_list.json, boxes as the seed made them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data.convert import box_from_landmarks
from ffem_cli.data.image_list import load_image_list

POINTS = [[40.0, 50.0], [70.0, 50.0], [55.0, 65.0], [43.0, 80.0], [68.0, 80.0]]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def seed_box(points) -> tuple[int, int, int, int]:
    """The seed's rule written out on one face: extent grown by 2/1.5, yaw shift from eye-nose ratio."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    width, height = (max(xs) - min(xs)) / 1.5, (max(ys) - min(ys)) / 1.5
    left = np.linalg.norm(np.subtract(points[0], points[2]))
    right = np.linalg.norm(np.subtract(points[1], points[2]))
    shift = -(1 - right / left) * 1.2 if left > right else (1 - left / right) * 1.2
    return tuple(
        np.array(
            [min(xs) - width + width * shift, min(ys) - height, max(xs) + width + width * shift, max(ys) + height],
            dtype=np.int32,
        ).tolist()
    )


@pytest.mark.parametrize("points", [POINTS, [[30, 50], [70, 52], [60, 66], [38, 82], [66, 80]]])
def test_landmark_box_matches_the_seed_rule(points):
    assert box_from_landmarks(np.array(points, np.float32)) == seed_box(points)


def test_vggface2_loose_boxes_and_landmarks(tmp_path):
    bb = tmp_path / "loose_bb_train.csv"
    bb.write_text('NAME_ID,X,Y,W,H\n"n000002/0001_01",-10,20,100,120\n"n000003/0002_01",5,6,50,60\n')
    lm = tmp_path / "loose_landmark_train.csv"
    lm.write_text(
        "NAME_ID,P1X,P1Y,P2X,P2Y,P3X,P3Y,P4X,P4Y,P5X,P5Y\n"
        '"n000002/0001_01",' + ",".join(str(v) for p in POINTS for v in p) + "\n"
    )
    result = run("convert", "vggface2", bb, lm, "-o", tmp_path / "out" / "image_list.json")
    assert result.exit_code == 0, result.output
    entries = load_image_list(tmp_path / "out" / "image_list.json")
    assert entries["n000002/0001_01.jpg"].box == (-10, 20, 90, 140)
    assert np.allclose(entries["n000002/0001_01.jpg"].landmarks, POINTS)
    assert entries["n000003/0002_01.jpg"].label == 1 and entries["n000003/0002_01.jpg"].landmarks is None
    assert json.loads((tmp_path / "out" / "image_list.label_map.json").read_text()) == {"n000002": 0, "n000003": 1}


def test_rfw_landmarks_give_boxes_groups_and_keys(tmp_path):
    lmk = tmp_path / "African_lmk.txt"
    coords = " ".join(str(v) for p in POINTS for v in p)
    lmk.write_text(
        f"test/data/African/m.01/m.01_0001.jpg m.01 {coords}\ntest/data/African/m.02/m.02_0003.jpg m.02 {coords}\n"
    )
    result = run("convert", "rfw", lmk, "-o", tmp_path / "image_list.json")
    assert result.exit_code == 0, result.output
    entries = load_image_list(tmp_path / "image_list.json")
    entry = entries["African/m.01/m.01_0001.jpg"]
    assert entry.box == seed_box(POINTS) and entry.group == "African"
    assert json.loads((tmp_path / "image_list.label_map.json").read_text()) == {"African/m.01": 0, "African/m.02": 1}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("African_lmk.txt", "a/b.jpg m 1 2 3\n", "line 1: expected '<image> <id>' and 10 coordinates, got 5 fields"),
        ("notes.txt", "", "an RFW landmark file is named <Race>_lmk.txt"),
        ("African_lmk.txt", "a/b.jpg m " + "x " * 10 + "\n", "line 1: coordinates must be numbers"),
    ],
)
def test_bad_rfw_file_is_one_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    result = run("convert", "rfw", path, "-o", tmp_path / "l.json")
    assert result.exit_code == 1
    assert result.output.strip().startswith(f"error: {path}") and message in result.output
    assert not (tmp_path / "l.json").exists()


def test_unknown_csv_and_format(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    assert "not a VGGFace2 loose_bb" in run("convert", "vggface2", path, "-o", tmp_path / "l.json").output
    assert "unknown format 'casia'" in run("convert", "casia", path, "-o", tmp_path / "l.json").output
