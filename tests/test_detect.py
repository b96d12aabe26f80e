"""`ffem detect`: batched MTCNN over an identity folder, rejects, resume, atomic output.

Real MTCNN runs on a handful of images only (it costs ~0.1-0.3 s each on
2 cores); the resume / interruption logic uses a fake detector with the
mtcnn package's output layout.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data import detect
from ffem_cli.data.detect import (
    DetectOptions,
    Face,
    choose_face,
    clip_box,
    detect_folder,
    plan_batches,
)
from ffem_cli.data.image_list import load_image_list
from ffem_cli.errors import FfemError
from ffem_cli.images import read_rgb

# The astronaut's face in skimage.data.astronaut() (512x512), marked by eye on
# the picture: cheek to cheek, hairline to chin. Eyes at about (202, 100) and (247, 101).
ASTRONAUT_FACE = (178, 75, 272, 185)
ASTRONAUT_EYES = np.array([[202, 100], [247, 101]], dtype=np.float32)


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def mtcnn():
    return detect.make_detector()


def save(root, rel, pixels):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(root / rel)


class FakeDetector:
    """The mtcnn package's numpy output without the network: a face in every image brighter than 50.

    Counts the images it saw; raises after ``fail_after`` calls when set.
    """

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.images = 0
        self.fail_after = fail_after

    def detect_faces(self, images, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.images += len(images)
        rows = []
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            if image.mean() > 50:
                xs, ys = [0.3, 0.7, 0.5, 0.35, 0.65], [0.4, 0.4, 0.55, 0.7, 0.7]
                rows.append(
                    [index, 4, 5, width - 3, height - 2, 0.99, *(x * width for x in xs), *(y * height for y in ys)]
                )
        return np.asarray(rows, dtype=np.float64).reshape(-1, 16)


def grey_folder(root, names, value=128, size=(40, 40)):
    for rel in names:
        save(root, rel, np.full((*size, 3), value, dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def astronaut_run(tmp_path_factory, mtcnn):
    """One real run over the astronaut, a non-face, a flat image, a corrupt and a tiny file."""
    root = tmp_path_factory.mktemp("photos")
    save(root, "astronaut/a.png", skimage.data.astronaut())
    save(root, "coins/c.png", skimage.data.coins())
    save(root, "flat/f.jpg", np.full((120, 160, 3), 200, dtype=np.uint8))
    save(root, "tiny/t.png", np.full((10, 10, 3), 200, dtype=np.uint8))
    (root / "broken").mkdir()
    (root / "broken" / "x.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    output = tmp_path_factory.mktemp("out") / "image_list.json"
    summary = detect_folder(root, output, DetectOptions(), detector=mtcnn)
    return root, output, summary


def test_astronaut_gives_one_face_on_the_known_face(astronaut_run):
    _, output, summary = astronaut_run
    entries = load_image_list(output)
    assert list(entries) == ["astronaut/a.png"]
    entry = entries["astronaut/a.png"]
    assert entry.label == 0
    assert iou(entry.box, ASTRONAUT_FACE) > 0.5
    assert np.abs(entry.landmarks[:2] - ASTRONAUT_EYES).max() < 8
    assert entry.score > 0.95
    assert json.loads((output.parent / "image_list.label_map.json").read_text()) == {"astronaut": 0}
    assert summary.kept == 1 and summary.processed == 5 and summary.extra_faces == 0
    assert summary.identities == 1 and summary.identities_without_face == ["broken", "coins", "flat", "tiny"]


@pytest.mark.parametrize("min_face_size", [40, 80])
def test_a_larger_min_face_size_still_finds_the_face(mtcnn, min_face_size):
    """mtcnn 1.0.0's own pyramid ran PNet below its 12-pixel window for any size above ~20 and found nothing."""
    image = skimage.data.astronaut().astype(np.float32)
    faces = detect.detect_batch(mtcnn, [image], DetectOptions(min_face_size=min_face_size))[0]
    assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) > 0.5


def test_the_pyramid_stops_at_the_pnet_window():
    scales = detect.mtcnn_pyramid(250, 250, min_face_size=20, scale_factor=0.709)
    assert scales[0] == pytest.approx(0.6) and len(scales) == 8  # 150 px ... 13.5 px, as the reference code
    for size in (20, 40, 100):
        levels = 500 * detect.mtcnn_pyramid(500, 640, min_face_size=size, scale_factor=0.709)
        assert levels.min() >= 12 and levels.min() * 0.709 < 12


def test_non_faces_corrupt_and_tiny_images_are_rejected_with_reasons(astronaut_run):
    _, output, summary = astronaut_run
    rejects = json.loads((output.parent / "image_list.rejects.json").read_text())
    assert {rel: r["reason"] for rel, r in rejects.items()} == {
        "broken/x.jpg": "corrupt",
        "coins/c.png": "no-face",
        "flat/f.jpg": "no-face",
        "tiny/t.png": "too-small",
    }
    assert rejects["tiny/t.png"]["detail"] == "10x10 image, --min-face-size 20"
    assert summary.rejected == {"corrupt": 1, "no-face": 2, "too-small": 1}
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "image_list.json",
        "image_list.label_map.json",
        "image_list.rejects.json",
    ]


def test_cli_prints_the_summary(tmp_path):
    root = tmp_path / "photos"
    save(root, "astronaut/a.jpg", skimage.data.astronaut())
    result = CliRunner().invoke(
        app, ["detect", str(root), "--output", str(tmp_path / "list.json"), "--threshold", "0.9"]
    )
    assert result.exit_code == 0, result.output
    assert "kept (one face each)" in result.output and "images/s" in result.output
    assert list(load_image_list(tmp_path / "list.json")) == ["astronaut/a.jpg"]


def test_cli_help_documents_the_face_choice():
    result = CliRunner().invoke(app, ["detect", "--help"])
    assert result.exit_code == 0
    assert "largest area x confidence" in result.output and "--keep central" in result.output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("high", "--threshold 'high': give one number (ONet) or three (PNet,RNet,ONet), e.g. 0.6,0.7,0.8"),
        ("0.5,0.6", "--threshold '0.5,0.6': give one number (ONet) or three (PNet,RNet,ONet), not 2"),
        ("1.5", "--threshold values must lie strictly between 0 and 1, got (0.6, 0.7, 1.5)"),
    ],
)
def test_cli_rejects_bad_thresholds(tmp_path, value, message):
    grey_folder(tmp_path / "photos", ["a/1.jpg"])
    result = CliRunner().invoke(
        app, ["detect", str(tmp_path / "photos"), "-o", str(tmp_path / "l.json"), "--threshold", value]
    )
    assert result.exit_code == 1
    assert f"error: {message}" in " ".join(result.output.split())
    assert not (tmp_path / "l.json").exists()


def test_empty_folder_is_one_clear_error(tmp_path):
    (tmp_path / "photos" / "alice").mkdir(parents=True)
    with pytest.raises(FfemError) as caught:
        detect_folder(tmp_path / "photos", tmp_path / "l.json", detector=FakeDetector())
    assert str(caught.value) == f"{tmp_path / 'photos'}: no images found in ROOT/<identity>/<image> layout"
    assert list(tmp_path.iterdir()) == [tmp_path / "photos"]


def test_nested_folder_is_an_error(tmp_path):
    grey_folder(tmp_path / "photos", ["alice/1.jpg", "bob/2019/2.jpg"])
    with pytest.raises(FfemError) as caught:
        detect_folder(tmp_path / "photos", tmp_path / "l.json", detector=FakeDetector())
    assert str(caught.value) == "bob/2019/2.jpg: images must sit directly in ROOT/<identity>/, not deeper"


def test_no_face_anywhere_is_an_error_but_rejects_are_written(tmp_path):
    grey_folder(tmp_path / "photos", ["a/1.jpg", "b/2.jpg"], value=0)
    output = tmp_path / "out" / "l.json"
    with pytest.raises(FfemError) as caught:
        detect_folder(tmp_path / "photos", output, detector=FakeDetector())
    rejects = output.parent / "l.rejects.json"
    assert str(caught.value) == f"{tmp_path / 'photos'}: no face found in any of 2 images; reasons are in {rejects}"
    assert sorted(p.name for p in output.parent.iterdir()) == ["l.rejects.json"]


def test_labels_skip_identities_without_a_face(tmp_path):
    root = grey_folder(tmp_path / "photos", ["amy/1.jpg", "cat/1.jpg"])
    grey_folder(root, ["bob/1.jpg"], value=0)
    summary = detect_folder(root, tmp_path / "l.json", detector=FakeDetector())
    entries = load_image_list(tmp_path / "l.json")
    assert {rel: e.label for rel, e in entries.items()} == {"amy/1.jpg": 0, "cat/1.jpg": 1}
    assert json.loads((tmp_path / "l.label_map.json").read_text()) == {"amy": 0, "cat": 1}
    assert summary.identities_without_face == ["bob"]


def test_depth_2_keeps_the_group_for_pack_groups(tmp_path):
    root = grey_folder(tmp_path / "photos", ["African/m1/1.jpg", "African/m1/2.jpg", "Asian/m2/1.jpg"])
    detect_folder(root, tmp_path / "l.json", detector=FakeDetector(), depth=2)
    entries = load_image_list(tmp_path / "l.json")
    assert {rel: (e.label, e.group) for rel, e in entries.items()} == {
        "African/m1/1.jpg": (0, "African"),
        "African/m1/2.jpg": (0, "African"),
        "Asian/m2/1.jpg": (1, "Asian"),
    }
    assert json.loads((tmp_path / "l.label_map.json").read_text()) == {"African/m1": 0, "Asian/m2": 1}
    with pytest.raises(FfemError, match="images must sit directly in ROOT/<identity>/, not deeper"):
        detect_folder(root, tmp_path / "l1.json", detector=FakeDetector())


def test_same_size_images_share_a_batch(tmp_path):
    root = grey_folder(tmp_path / "photos", [f"a/{i}.jpg" for i in range(5)])
    grey_folder(root, [f"b/{i}.jpg" for i in range(3)], size=(30, 50))
    fake = FakeDetector()
    detect_folder(root, tmp_path / "l.json", DetectOptions(batch_size=4), detector=fake)
    assert fake.images == 8 and fake.calls == 3  # 40x40: 4 + 1, 50x30: 3


def test_resume_skips_done_images(tmp_path):
    root = grey_folder(tmp_path / "photos", ["a/1.jpg", "a/2.jpg"])
    grey_folder(root, ["b/dark.jpg"], value=0)
    output = tmp_path / "l.json"
    detect_folder(root, output, detector=FakeDetector())
    grey_folder(root, ["b/new.jpg"], size=(60, 60))
    fake = FakeDetector()
    summary = detect_folder(root, output, resume=True, detector=fake)
    assert fake.images == 1  # only the new image; the rejected dark one is not retried
    assert summary.skipped == 3 and summary.processed == 1 and summary.kept == 3
    assert sorted(load_image_list(output)) == ["a/1.jpg", "a/2.jpg", "b/new.jpg"]
    again = FakeDetector()
    detect_folder(root, output, resume=True, detector=again)
    assert again.images == 0


def test_interrupted_run_leaves_no_output_and_resume_finishes(tmp_path):
    root = grey_folder(tmp_path / "photos", [f"p{i}/1.jpg" for i in range(5)])
    output = tmp_path / "l.json"
    options = DetectOptions(batch_size=1, checkpoint_every=1, workers=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        detect_folder(root, output, options, detector=FakeDetector(fail_after=2))
    assert not output.exists() and not (tmp_path / "image_list.label_map.json").exists()
    checkpoint = tmp_path / ".l.json.checkpoint.json"
    assert sorted(json.loads(checkpoint.read_text())["entries"]) == ["p0/1.jpg", "p1/1.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    fake = FakeDetector()
    detect_folder(root, output, options, resume=True, detector=fake)
    assert fake.images == 3
    assert sorted(load_image_list(output)) == [f"p{i}/1.jpg" for i in range(5)]
    assert not checkpoint.exists()


def test_interrupted_rerun_keeps_the_previous_complete_list(tmp_path):
    root = grey_folder(tmp_path / "photos", [f"p{i}/1.jpg" for i in range(3)])
    output = tmp_path / "l.json"
    detect_folder(root, output, detector=FakeDetector())
    before = output.read_bytes()
    with pytest.raises(RuntimeError):
        detect_folder(root, output, DetectOptions(batch_size=1), detector=FakeDetector(fail_after=1))
    assert output.read_bytes() == before


def test_choose_face_prefers_area_times_confidence_and_clips():
    landmarks = np.zeros((5, 2), dtype=np.float32)
    small_sure = Face(np.array([10.0, 10, 30, 30]), landmarks, 0.999)
    big_unsure = Face(np.array([-20.4, 40.6, 90, 130.7]), landmarks, 0.81)
    entry, extra = choose_face([small_sure, big_unsure], width=100, height=120)
    assert entry.box == (0, 41, 90, 120) and extra == 1 and entry.score == pytest.approx(0.81)
    assert choose_face([], 100, 100) is None
    assert clip_box(np.array([99.7, 5, 120, 6.2]), 100, 100) == (99, 5, 100, 6)


def test_choose_face_central_takes_the_face_over_the_centre_else_the_nearest():
    landmarks = np.zeros((5, 2), dtype=np.float32)
    big_aside = Face(np.array([0.0, 0, 60, 60]), landmarks, 0.99)  # largest, off the centre (100, 100)
    small_centre = Face(np.array([80.0, 80, 120, 120]), landmarks, 0.9)
    tiny_centre = Face(np.array([95.0, 95, 105, 105]), landmarks, 0.99)  # also covers it, smaller
    faces = [big_aside, small_centre, tiny_centre]
    assert choose_face(faces, 200, 200)[0].box == (0, 0, 60, 60)  # the default rule: largest
    entry, extra = choose_face(faces, 200, 200, keep="central")
    assert entry.box == (80, 80, 120, 120) and extra == 2
    near = Face(np.array([110.0, 110, 150, 150]), landmarks, 0.9)  # no box covers the centre: the nearest
    assert choose_face([big_aside, near], 200, 200, keep="central")[0].box == (110, 110, 150, 150)


def test_keep_rule_is_checked_and_resume_refuses_another_rule(tmp_path):
    with pytest.raises(FfemError, match="--keep must be one of largest, central, got 'middle'"):
        DetectOptions(keep="middle")
    root = grey_folder(tmp_path / "photos", [f"p{i}/1.jpg" for i in range(3)])
    output = tmp_path / "l.json"
    options = DetectOptions(batch_size=1, checkpoint_every=1, workers=1, keep="central")
    with pytest.raises(RuntimeError):
        detect_folder(root, output, options, detector=FakeDetector(fail_after=2))
    with pytest.raises(FfemError, match="made with --keep central, not largest; resume with the same rule"):
        detect_folder(root, output, DetectOptions(batch_size=1), resume=True, detector=FakeDetector())
    detect_folder(root, output, options, resume=True, detector=FakeDetector())
    assert sorted(load_image_list(output)) == [f"p{i}/1.jpg" for i in range(3)]


def test_plan_batches_caps_pixels_per_batch():
    sizes = {f"a/{i}.jpg": (250, 250) for i in range(20)} | {f"b/{i}.jpg": (2000, 1500) for i in range(3)}
    batches = plan_batches(sizes, DetectOptions(batch_size=16))
    assert [len(b) for b in batches] == [16, 4, 1, 1, 1]


def test_read_failures_map_to_reasons(tmp_path):
    decoded = dict(detect._decode_batch(tmp_path, ["gone/1.jpg"], DetectOptions()))
    assert decoded["gone/1.jpg"] == detect.Reject("missing", "no such file")
    denied = detect.ImageReadError(tmp_path / "x.jpg", "corrupt", "Permission denied")
    denied.__cause__ = PermissionError(13, "Permission denied")
    assert detect._reject_for(denied) == detect.Reject("unreadable", "permission denied")


@pytest.mark.realdata
def test_detection_counts_match_the_manifest(detection_root, mtcnn):
    """Face counts on ../shared/data/detection as detection_manifest.csv states them.

    The dlib_faces/ PASCAL VOC folder (boxes in XML) is not used here. Where
    the manifest's count came from another detector or setting:
    - deepface_selfie-many-people.jpg: ">=5 (mtcnn)" was measured with the
      thresholds of mtcnn 0.1.x (0.6, 0.7, 0.7); ffem's default ONet
      threshold is 0.8 (mtcnn 1.0.0's), so this file runs at 0.7.
    - face_recognition_obama_partial_face.jpg: "1" is dlib HOG's count; MTCNN
      also reports a small false positive, so the test checks that the face
      ffem keeps is the border-cut face HOG found.
    - "2 (file name)" and "several (file name)": at least that many (a child's
      face in the background of obama_and_biden.jpg is a third real face).
    """
    rows = list(csv.DictReader((detection_root / "detection_manifest.csv").open()))
    hog_boxes = {  # (top, right, bottom, left) from face_recognition's tests, as x1, y1, x2, y2
        "face_recognition_obama.jpg": (349, 142, 617, 409),
        "face_recognition_obama_partial_face.jpg": (0, 142, 191, 365),
    }
    checked = 0
    for row in rows:
        name, expected = row["file"], row["expected_faces"]
        if name.endswith("/"):
            continue
        image = read_rgb(detection_root / name)
        thresholds = (0.6, 0.7, 0.7) if name == "deepface_selfie-many-people.jpg" else (0.6, 0.7, 0.8)
        faces = detect.detect_batch(mtcnn, [image], DetectOptions(thresholds=thresholds))[0]
        count = len(faces)
        if name == "face_recognition_obama_partial_face.jpg":
            assert count >= 1
        elif expected.startswith(">="):
            assert count >= int(expected[2:].split()[0]), name
        elif expected.startswith("several"):
            assert count >= 2, name
        elif expected.endswith("(file name)"):
            assert count >= int(expected.split()[0]), name
        else:
            assert count == int(expected), (name, count)
        if name in hog_boxes:
            entry, _ = choose_face(faces, width=image.shape[1], height=image.shape[0])
            assert iou(entry.box, hog_boxes[name]) > 0.5, (name, entry.box)
        checked += 1
    assert checked == 12


def test_links_out_of_root_broken_links_loops_bombs_and_odd_names_are_rejects(tmp_path):
    """Each used to be read through the link, skipped silently, or crash the run (the bomb, the name)."""
    import os

    from test_images import bomb_png

    root = grey_folder(tmp_path / "photos", ["a/ok.jpg"])
    grey_folder(tmp_path, ["outside/secret.jpg"])
    (root / "a/link.jpg").symlink_to(tmp_path / "outside/secret.jpg")
    (root / "a/gone.jpg").symlink_to(root / "a/nowhere.jpg")
    (root / "a/loop.jpg").symlink_to(root / "a/loop.jpg")
    bomb_png(root / "a/bomb.png")
    save(root, os.fsdecode(b"a/latin1_\xff\xfe.jpg"), np.full((40, 40, 3), 128, np.uint8))
    output = tmp_path / "l.json"
    summary = detect_folder(root, output, detector=FakeDetector())
    rejects = json.loads((tmp_path / "l.rejects.json").read_text(encoding="utf-8"))
    assert {rel: r["reason"] for rel, r in rejects.items()} == {
        "a/bomb.png": "too-large",
        "a/gone.jpg": "missing",
        "a/latin1_\\xff\\xfe.jpg": "bad-name",
        "a/link.jpg": "outside-root",
        "a/loop.jpg": "symlink-loop",
    }
    assert rejects["a/gone.jpg"]["detail"] == f"broken symlink to {root / 'a/nowhere.jpg'}"
    assert list(load_image_list(output)) == ["a/ok.jpg"] and summary.kept == 1
    followed = detect_folder(root, tmp_path / "f.json", DetectOptions(follow_symlinks=True), detector=FakeDetector())
    assert "a/link.jpg" in load_image_list(tmp_path / "f.json") and followed.kept == 2


def test_huge_photos_are_shrunk_for_detection_and_boxes_mapped_back(tmp_path):
    root = grey_folder(tmp_path / "photos", ["a/wide.jpg"], size=(1500, 3000))
    fake = FakeDetector()
    summary = detect_folder(root, tmp_path / "l.json", DetectOptions(max_side=400), detector=fake)
    assert summary.downscaled == 1 and fake.images == 1
    entry = load_image_list(tmp_path / "l.json")["a/wide.jpg"]
    # the fake's box on the 400x200 image is (4, 5, 397, 198): x 7.5 in full-size pixels
    assert np.allclose(entry.box, (30, 37.5, 2977.5, 1485), atol=1)
    assert np.allclose(entry.landmarks[0], (0.3 * 3000, 0.4 * 1500), atol=1)


def test_resume_refuses_a_checkpoint_of_another_root_and_redoes_changed_images(tmp_path):
    first = grey_folder(tmp_path / "first", ["a/1.jpg", "a/2.jpg", "b/1.jpg"])
    output = tmp_path / "l.json"
    options = DetectOptions(batch_size=1, checkpoint_every=1, workers=1)
    with pytest.raises(RuntimeError):
        detect_folder(first, output, options, detector=FakeDetector(fail_after=2))
    second = grey_folder(tmp_path / "second", ["a/1.jpg", "a/2.jpg", "b/1.jpg"], value=0)
    with pytest.raises(FfemError, match=f"made on {first}, not on {second}; rerun without --resume"):
        detect_folder(second, output, options, resume=True, detector=FakeDetector())
    grey_folder(first, ["a/1.jpg"], value=0, size=(41, 41))  # changed since the checkpoint: no face now
    summary = detect_folder(first, output, options, resume=True, detector=FakeDetector())
    assert summary.skipped == 1  # a/2.jpg only
    assert sorted(load_image_list(output)) == ["a/2.jpg", "b/1.jpg"]


def test_checkpoint_that_is_not_utf8_is_one_line(tmp_path):
    root = grey_folder(tmp_path / "photos", ["a/1.jpg"])
    output = tmp_path / "l.json"
    detect.checkpoint_path(output).write_bytes(b'{"root": "\xff\xfe"}')
    with pytest.raises(FfemError, match=r"checkpoint.json: not UTF-8 text \(byte 10\); delete it to start over"):
        detect_folder(root, output, resume=True, detector=FakeDetector())


def test_label_map_is_named_after_its_list_and_a_failed_run_leaves_the_old_one(tmp_path):
    good = grey_folder(tmp_path / "good", ["amy/1.jpg", "bob/1.jpg"])
    dark = grey_folder(tmp_path / "dark", ["zed/1.jpg"], value=0)
    detect_folder(good, tmp_path / "train.json", detector=FakeDetector())
    before = (tmp_path / "train.label_map.json").read_text()
    detect_folder(good, tmp_path / "val.json", detector=FakeDetector())
    with pytest.raises(FfemError, match="no face found"):
        detect_folder(dark, tmp_path / "train.json", detector=FakeDetector())
    assert (tmp_path / "train.label_map.json").read_text() == before == (tmp_path / "val.label_map.json").read_text()
    assert not (tmp_path / "label_map.json").exists()
