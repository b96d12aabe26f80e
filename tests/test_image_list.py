"""The image_list.json schema: every bad input gives one exact line; good lists round-trip."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from ffem_cli.data.image_list import (
    FaceEntry,
    check_against_images,
    fingerprint,
    label_map_path,
    load_image_list,
    load_label_map,
    write_image_list,
    write_label_map,
)
from ffem_cli.errors import FfemError

GOOD = {"label": 0, "x1": 10, "y1": 20, "x2": 50, "y2": 70}


def write(tmp_path, obj=None, text=None):
    path = tmp_path / "image_list.json"
    path.write_text(text if text is not None else json.dumps(obj), encoding="utf-8")
    return path


def error_of(path) -> str:
    with pytest.raises(FfemError) as caught:
        load_image_list(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([1, 2], 'the top level must be an object {"rel/path.jpg": {...}}, not list'),
        ({}, "the image list has no entries"),
        ({"a/1.jpg": [1, 2]}, '"a/1.jpg": entry is a list, not an object'),
        ({"a/1.jpg": 7}, '"a/1.jpg": entry is 7, not an object'),
        ({"a/1.jpg": {"label": 0, "x1": 1, "y1": 1}}, '"a/1.jpg": missing x2, y2'),
        ({"a/1.jpg": {**GOOD, "label": 1.5}}, '"a/1.jpg": label 1.5 is not an integer'),
        ({"a/1.jpg": {**GOOD, "label": True}}, '"a/1.jpg": label true is not an integer'),
        ({"a/1.jpg": {**GOOD, "label": "0"}}, '"a/1.jpg": label "0" is not an integer'),
        ({"a/1.jpg": {**GOOD, "label": -1}}, '"a/1.jpg": label -1 is negative'),
        ({"a/1.jpg": {**GOOD, "x1": 10.5}}, '"a/1.jpg": x1 10.5 is not an integer'),
        ({"a/1.jpg": {**GOOD, "x2": 10}}, '"a/1.jpg": box (10, 20, 10, 70) is empty: need x2 > x1 and y2 > y1'),
        ({"a/1.jpg": {**GOOD, "y2": 5}}, '"a/1.jpg": box (10, 20, 50, 5) is empty: need x2 > x1 and y2 > y1'),
        (
            {"a/1.jpg": {**GOOD, "landmarks": [[1, 2]] * 4}},
            '"a/1.jpg": landmarks must be 5 [x, y] pairs of finite numbers',
        ),
        (
            {"a/1.jpg": {**GOOD, "landmarks": [[1, "2"]] * 5}},
            '"a/1.jpg": landmarks must be 5 [x, y] pairs of finite numbers',
        ),
        (
            {"a/1.jpg": {**GOOD, "landmarks": [[1, 2, 3]] * 5}},
            '"a/1.jpg": landmarks must be 5 [x, y] pairs of finite numbers',
        ),
        ({"a/1.jpg": {**GOOD, "score": "high"}}, '"a/1.jpg": score "high" is not a number'),
        (
            {"/abs/1.jpg": GOOD},
            '"/abs/1.jpg": the image path must be relative to ROOT (no leading /, no .., / separators)',
        ),
        ({"../1.jpg": GOOD}, '"../1.jpg": the image path must be relative to ROOT (no leading /, no .., / separators)'),
        (
            {"a/1.jpg": GOOD, "c/1.jpg": {**GOOD, "label": 2}},
            "labels must be 0..N-1 without gaps: label 1 is missing (highest label 2); --relabel compacts them",
        ),
        (
            {"a/1.jpg": {**GOOD, "label": 9}},
            "labels must be 0..N-1 without gaps: labels 0, 1, 2, 3, 4 and 4 more are missing (highest label 9); "
            "--relabel compacts them",
        ),
    ],
)
def test_bad_entry_names_file_key_and_problem(tmp_path, obj, expected):
    path = write(tmp_path, obj)
    assert error_of(path) == f"{path}: {expected}"


def test_several_problems_name_the_first_and_count_the_rest(tmp_path):
    path = write(
        tmp_path,
        {
            "a/b.jpg": {**GOOD, "label": 1.5, "x1": "-1"},
            "a/c.jpg": {**GOOD, "x2": "9"},
            "a/d.jpg": "nope",
        },
    )
    assert error_of(path) == f'{path}: "a/b.jpg": label 1.5 is not an integer (and 3 more problems)'


def test_one_more_problem_is_singular(tmp_path):
    path = write(tmp_path, {"a/b.jpg": {**GOOD, "label": -1, "x1": 1.5}})
    assert error_of(path) == f'{path}: "a/b.jpg": label -1 is negative (and 1 more problem)'


def test_malformed_json_gives_line_and_column(tmp_path):
    path = write(tmp_path, text='{\n  "a/1.jpg": {"label": 0,}\n}')
    assert error_of(path) == (
        f"{path}: malformed JSON at line 2, column 26: Expecting property name enclosed in double quotes"
    )


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, text='{"a/1.jpg": {"label": 0, "x1": 0, "y1": 0, "x2": 1, "y2": 1}, "a/1.jpg": {}}')
    assert error_of(path) == f'{path}: "a/1.jpg" appears more than once'


def test_missing_file(tmp_path):
    assert error_of(tmp_path / "nope.json") == f"{tmp_path / 'nope.json'}: no such image list"


def test_integral_floats_are_accepted_as_integers(tmp_path):
    path = write(tmp_path, {"a/1.jpg": {"label": 0.0, "x1": 1.0, "y1": 2, "x2": 3.0, "y2": 4}})
    entry = load_image_list(path)["a/1.jpg"]
    assert entry.label == 0 and entry.box == (1, 2, 3, 4)
    assert all(type(v) is int for v in (entry.label, *entry.box))


def test_write_then_load_round_trips_in_seed_format(tmp_path):
    landmarks = np.array([[1.234, 2.345], [3, 4], [5, 6], [7, 8], [9.999, 10.001]], dtype=np.float32)
    entries = {
        "b/2.jpg": FaceEntry(1, (5, 6, 7, 8), landmarks, 0.987654),
        "a/1.jpg": FaceEntry(0, (1, 2, 3, 4), None, None),
    }
    path = tmp_path / "out" / "list.json"
    write_image_list(path, entries)
    raw = json.loads(path.read_text())
    assert list(raw) == ["a/1.jpg", "b/2.jpg"]
    assert raw["a/1.jpg"] == {"label": 0, "x1": 1, "y1": 2, "x2": 3, "y2": 4}
    assert raw["b/2.jpg"]["landmarks"][0] == [1.23, 2.35] and raw["b/2.jpg"]["score"] == 0.9877
    loaded = load_image_list(path)
    assert loaded["a/1.jpg"] == entries["a/1.jpg"]
    assert loaded["b/2.jpg"].box == (5, 6, 7, 8) and loaded["b/2.jpg"].landmarks.shape == (5, 2)
    assert loaded["b/2.jpg"].landmarks.dtype == np.float32
    assert [p.name for p in path.parent.iterdir()] == ["list.json"]  # no temporary left behind


def test_reads_the_synthetic_ground_truth(synthetic_faces):
    root, list_path = synthetic_faces
    entries = load_image_list(list_path)
    assert len(entries) == 36 and {e.label for e in entries.values()} == set(range(6))
    check_against_images(entries, root)


def test_label_map_and_fingerprint(tmp_path):
    path = label_map_path(tmp_path / "image_list.json")
    assert path == tmp_path / "image_list.label_map.json"
    write_label_map(path, {"zed": 1, "amy": 0})
    assert path.read_text() == '{\n  "amy": 0,\n  "zed": 1\n}\n'
    assert load_label_map(path) == {"amy": 0, "zed": 1}
    assert fingerprint(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def make_images(root, sizes):
    for rel, size in sizes.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (90, 90, 90)).save(root / rel)


def test_check_against_images_missing_file_and_box_outside(tmp_path):
    make_images(tmp_path, {"a/1.jpg": (250, 250), "a/2.png": (100, 80)})
    entries = {
        "a/1.jpg": FaceEntry(0, (10, 10, 250, 250)),
        "a/2.png": FaceEntry(0, (10, 10, 60, 81)),
        "a/3.jpg": FaceEntry(0, (1, 1, 2, 2)),
    }
    with pytest.raises(FfemError) as caught:
        check_against_images(entries, tmp_path)
    assert (
        str(caught.value)
        == f'{tmp_path}: "a/2.png": box (10, 10, 60, 81) lies outside the 100x80 image (and 1 more problem)'
    )
    del entries["a/2.png"]
    with pytest.raises(FfemError) as caught:
        check_against_images(entries, tmp_path)
    assert str(caught.value) == f'{tmp_path}: "a/3.jpg": missing file'
    del entries["a/3.jpg"]
    check_against_images(entries, tmp_path)


def test_check_against_images_corrupt_file_and_exif_rotation(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(FfemError, match=r'"a/bad.jpg": unreadable image \(cannot identify image file'):
        check_against_images({"a/bad.jpg": FaceEntry(0, (0, 0, 1, 1))}, tmp_path)
    # A 200x100 JPEG with EXIF orientation 6 (rotate 90) is 100x200 once read_rgb applies it.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (200, 100)).save(tmp_path / "a" / "rot.jpg", exif=exif)
    check_against_images({"a/rot.jpg": FaceEntry(0, (0, 0, 100, 200))}, tmp_path)
    with pytest.raises(FfemError, match="lies outside the 100x200 image"):
        check_against_images({"a/rot.jpg": FaceEntry(0, (0, 0, 200, 100))}, tmp_path)


def test_alias_spellings_of_one_photo_are_refused(tmp_path):
    path = tmp_path / "l.json"
    path.write_text(json.dumps({"a/b.jpg": GOOD, "a//b.jpg": {**GOOD, "label": 1}, "c/d.jpg": {**GOOD, "label": 1}}))
    with pytest.raises(FfemError, match=r'"a//b.jpg": the same image as "a/b.jpg" \(one photo listed twice\)'):
        load_image_list(path)
    path.write_text(json.dumps({"./a/b.jpg": GOOD, "a/./b.jpg": GOOD}))
    with pytest.raises(FfemError, match="the same image as"):
        load_image_list(path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a/1.jpg": {"label": ' + "1" * 5000 + ', "x1": 0, "y1": 0, "x2": 5, "y2": 5}}', "Exceeds the limit"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_json_beyond_python_limits_is_one_line(tmp_path, text, reason):
    path = tmp_path / "l.json"
    path.write_text(text)
    with pytest.raises(FfemError, match=f"l.json: unreadable JSON \\({reason}"):
        load_image_list(path)
    label_map = tmp_path / "l.label_map.json"
    label_map.write_text(text)
    with pytest.raises(FfemError, match="unreadable label map"):
        load_label_map(label_map)


# ---------------------------------------------------------------- streaming


def entry_text(number: int) -> dict:
    return {
        "label": number % 3,
        "x1": number,
        "y1": 2,
        "x2": number + 40,
        "y2": 50,
        "landmarks": [[1.5, 2.25]] * 5,
        "score": 0.5,
        "group": "Asian" if number % 2 else "African",
    }


@pytest.mark.parametrize("ascii_only", [True, False])
def test_streaming_parse_across_tiny_chunks_matches_json_loads(tmp_path, monkeypatch, ascii_only):
    """Chunks of 3 characters cut every key, number and escape; the entries come out as json.loads reads them."""
    import ffem_cli.data.image_list as image_list

    raw = {f'p{n}/caf\u00e9 "{n}"\t\u2603{n}.jpg': entry_text(n) for n in range(40)}
    path = write(tmp_path, text="\n" + json.dumps(raw, indent=2, ensure_ascii=ascii_only) + "\n  ")
    monkeypatch.setattr(image_list, "_CHUNK", 3)
    loaded = load_image_list(path)
    assert list(loaded) == list(raw)  # file order
    for key, value in raw.items():
        entry = loaded[key]
        assert (entry.label, entry.box, entry.score, entry.group) == (
            value["label"],
            (value["x1"], value["y1"], value["x2"], value["y2"]),
            0.5,
            value["group"],
        )
        assert entry.landmarks.tolist() == value["landmarks"]


@pytest.mark.parametrize("chunk", [3, 1 << 20])
@pytest.mark.parametrize(
    "broken",
    [
        '{"a/0.jpg": {"label": 0, "x1": 0, "y1": 0, "x2": 5, "y2": 5},\n "a/1.jpg": {"label": 0 "x1": 1}}',
        '{"a/0.jpg": {"label": 0, "x1": 0, "y1": 0, "x2": 5, "y2": 5}\n "a/1.jpg": {}}',
        '{"a/0.jpg": {"label": 0, "x1": 0, "y1": 0, "x2": 5, "y2": 5},\n\n "a/1.jpg" {}}',
        '{"a/0.jpg": {"label": 0, "x1": 0, "y1": 0, "x2": 5, "y2": 5},\n "a/1.jpg": {"label": 0,',
        '{"a/0.jpg": {"label": 0, "x1": 0, "y1": 0, "x2": 5, "y2": 5},\n "a/1.jpg": {"label": 0}, }',
        '{"a/0.jpg": {"label": 0, "x1": 0, "y1": 0, "x2": 5, "y2": 5}}\n  {"extra": 1}',
        '{"a/0.jpg": {"label": 0, "x1": 0, "y1": 0, "x2": 5, "y2": 5},\n "a/1.jpg": {"label": "unterminated',
    ],
)
def test_malformed_json_mid_file_gives_json_position(tmp_path, monkeypatch, broken, chunk):
    """The streaming parser names the line, column and message json.loads gives for the whole text."""
    import ffem_cli.data.image_list as image_list

    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(broken)
    monkeypatch.setattr(image_list, "_CHUNK", chunk)
    path = write(tmp_path, text=broken)
    exc = expected.value
    assert error_of(path) == f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"


def test_schema_error_in_a_late_entry_is_named_with_the_count(tmp_path, monkeypatch):
    import ffem_cli.data.image_list as image_list

    raw = {f"a/{n:03d}.jpg": {**GOOD, "label": n} for n in range(300)}
    raw["a/250.jpg"]["x2"] = "wide"
    raw["a/280.jpg"]["label"] = -4
    raw["a/299.jpg"] = {**GOOD, "label": 299, "landmarks": [[0, 0]]}
    monkeypatch.setattr(image_list, "_CHUNK", 64)
    path = write(tmp_path, raw)
    assert error_of(path) == f'{path}: "a/250.jpg": x2 "wide" is not an integer (and 2 more problems)'


def test_streamed_list_is_numpy_columns(tmp_path):
    from ffem_cli.data.image_list import scan_image_list

    raw = {"b/1.jpg": {**GOOD, "label": 1, "group": "x"}, "a/1.jpg": {**GOOD, "landmarks": [[3, 4]] * 5}}
    faces = scan_image_list(write(tmp_path, raw))
    assert faces.keys.dtype.kind == "S" and faces.labels.tolist() == [1, 0]
    assert faces.boxes.tolist() == [[10, 20, 50, 70]] * 2
    assert faces.has_landmarks().tolist() == [False, True] and faces.group_names == ["x"]
    assert faces.groups.tolist() == [0, -1]


HEADER_CHECK = """
import sys
from ffem_cli.data.image_list import OUTSIDE, check_listed_images, scan_image_list
from ffem_cli.errors import FfemError
faces = scan_image_list(sys.argv[1])
for processes in (0, 2):
    fits = check_listed_images(faces, sys.argv[2], strict_boxes=False, processes=processes)
    print(processes, fits.fit.tolist(), fits.outside)
faces = scan_image_list(sys.argv[3])
for processes in (0, 2):
    try:
        check_listed_images(faces, sys.argv[2], processes=processes)
    except FfemError as exc:
        print(processes, exc)
"""


def test_header_checks_in_forked_processes_find_what_threads_find(tmp_path):
    """``pack --workers 2`` checks headers in two forked processes (a subprocess here: no TensorFlow loaded)."""
    import subprocess
    import sys

    make_images(tmp_path / "img", {f"a/{n}.jpg": (100, 80) for n in range(7)})
    boxes = {n: (10, 10, 60, 60) for n in range(7)} | {2: (90, 10, 130, 60), 5: (120, 10, 160, 60)}
    raw = {f"a/{n}.jpg": {"label": 0, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]} for n, b in boxes.items()}
    good = write(tmp_path, raw)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**raw, "a/9.jpg": raw["a/0.jpg"], "a/8.jpg": raw["a/0.jpg"]}))
    out = subprocess.run(
        [sys.executable, "-c", HEADER_CHECK, str(good), str(tmp_path / "img"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    fits = "[0, 0, 1, 0, 0, 2, 0] {5: 'box (120, 10, 160, 60) lies outside the 100x80 image'}"
    problem = (
        f'{tmp_path / "img"}: "a/2.jpg": box (90, 10, 130, 60) lies outside the 100x80 image (and 3 more problems)'
    )
    assert out == [f"0 {fits}", f"2 {fits}", f"0 {problem}", f"2 {problem}"]
