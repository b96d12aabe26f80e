"""`ffem pack`: shards + manifest on the synthetic set, resume, killed runs, every bad input."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data.crop import crop_face
from ffem_cli.data.image_list import fingerprint, load_image_list
from ffem_cli.data.pack import PackSettings, encode_face, pack
from ffem_cli.data.packdir import PackDir, shard_name
from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256
from ffem_cli.images import read_rgb

SETTINGS = PackSettings(shards=4)


def finished_files(output: Path) -> list[str]:
    """Names under ``output`` that would make it look like (part of) a finished pack."""
    if not output.exists():
        return []
    return sorted(p.name for p in output.iterdir() if p.name == "manifest.json" or p.name.endswith(".tfrecord"))


def read_records(path: Path) -> list[tuple[bytes, int, str]]:
    """(JPEG bytes, label, path) of every example in a shard, parsed by TensorFlow."""
    import tensorflow as tf

    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/label": tf.io.FixedLenFeature([], tf.int64),
        "image/path": tf.io.FixedLenFeature([], tf.string),
    }
    records = []
    for record in tf.data.TFRecordDataset(str(path)):
        example = tf.io.parse_single_example(record, features)
        records.append(
            (
                example["image/encoded"].numpy(),
                int(example["image/label"]),
                example["image/path"].numpy().decode(),
            )
        )
    return records


@pytest.fixture(scope="module")
def labelled_list(synthetic_faces, tmp_path_factory):
    """The synthetic list copied beside its image_list.label_map.json; returns (root, list path)."""
    root, list_path = synthetic_faces
    folder = tmp_path_factory.mktemp("list")
    copy = folder / "image_list.json"
    shutil.copy(list_path, copy)
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    (folder / "image_list.label_map.json").write_text(json.dumps({n: i for i, n in enumerate(names)}))
    return root, copy


@pytest.fixture(scope="module")
def packed(labelled_list, tmp_path_factory):
    """A clean 4-shard pack of the synthetic set written by one in-process worker."""
    root, list_path = labelled_list
    output = tmp_path_factory.mktemp("pack") / "faces"
    result = pack(list_path, root, output, SETTINGS, workers=1)
    return output, result


@pytest.fixture
def packed_copy(packed, tmp_path):
    """A copy of ``packed`` in this test's folder, to damage or resume."""
    output = tmp_path / "faces"
    shutil.copytree(packed[0], output)
    return output


def test_manifest_counts_checksums_and_settings(packed, labelled_list):
    output, result = packed
    root, list_path = labelled_list
    manifest = PackDir(output).read_manifest_json()
    assert manifest["num_examples"] == result.images == 36
    assert sum(s["count"] for s in manifest["shards"]) == 36
    assert [s["file"] for s in manifest["shards"]] == [shard_name(i, 4) for i in range(4)]
    assert manifest["shards"][0]["file"] == "faces-00000-of-00004.tfrecord"
    for shard in manifest["shards"]:
        assert file_sha256(output / shard["file"]) == shard["sha256"]
    assert manifest["index"]["sha256"] == file_sha256(PackDir(output).index_path)
    assert (manifest["num_classes"], manifest["image_size"], manifest["crop"]) == (6, 112, "margin")
    assert manifest["margin"] == 0.2 and manifest["settings"]["jpeg_quality"] == 95
    assert manifest["label_map"] == json.loads((list_path.parent / "image_list.label_map.json").read_text())
    assert manifest["sources"][0]["fingerprint"] == fingerprint(list_path)
    assert manifest["sources"][0]["format"] == "image-list"
    assert manifest["skipped"] == [] and manifest["num_skipped"] == 0
    # Nothing but the pack itself remains: no progress records, no temporaries.
    assert sorted(p.name for p in output.iterdir()) == sorted(
        [shard_name(i, 4) for i in range(4)] + ["index.npz", "manifest.json", "rejects.json"]
    )


def test_records_hold_the_cropped_faces_with_labels_and_paths(packed, labelled_list):
    from PIL import Image

    output, _ = packed
    root, list_path = labelled_list
    entries = load_image_list(list_path)
    seen = []
    for i in range(4):
        for encoded, label, path in read_records(output / shard_name(i, 4)):
            entry = entries[path]
            assert label == entry.label
            image = read_rgb(root / path)
            assert encoded == encode_face(Image.fromarray(image), entry, SETTINGS)
            stored = np.asarray(Image.open(io.BytesIO(encoded)), dtype=np.float64)
            expected = crop_face(image, entry.box, entry.landmarks, 112, 0.2)
            assert stored.shape == (112, 112, 3)
            assert np.abs(stored - expected).mean() < 6.0  # JPEG q95 of a noisy drawing
            seen.append(path)
    assert sorted(seen) == sorted(entries)


def test_shards_mix_identities_in_shuffled_order(packed):
    output, _ = packed
    for i in range(4):
        records = read_records(output / shard_name(i, 4))
        labels = [label for _, label, _ in records]
        assert len(set(labels)) >= 3, labels
    first = [path for _, _, path in read_records(output / shard_name(0, 4))]
    assert first != sorted(first)


def run_cli(list_path: Path, root: Path, output: Path, *extra: str, shards: int = 2):
    return CliRunner().invoke(
        app,
        ["pack", str(list_path), "--root", str(root), "--output", str(output), "--shards", str(shards), *extra],
    )


def test_two_workers_write_the_same_bytes_as_one(packed, labelled_list, tmp_path):
    output, _ = packed
    root, list_path = labelled_list
    result = run_cli(list_path, root, tmp_path / "p", "--workers", "2", shards=4)
    assert result.exit_code == 0, result.output
    assert "images/s" in result.output and "skipped" in result.output
    for i in range(4):
        assert file_sha256(tmp_path / "p" / shard_name(i, 4)) == file_sha256(output / shard_name(i, 4))


def test_align_mode_is_recorded(labelled_list, tmp_path):
    root, list_path = labelled_list
    pack(
        list_path,
        root,
        tmp_path / "a",
        PackSettings(shards=2, crop="align", image_size=64),
        workers=1,
    )
    manifest = PackDir(tmp_path / "a").read_manifest_json()
    assert (manifest["crop"], manifest["image_size"], manifest["num_examples"]) == ("align", 64, 36)


def test_finished_pack_is_refused_without_resume_or_overwrite(packed, labelled_list):
    output, _ = packed
    root, list_path = labelled_list
    with pytest.raises(FfemError) as caught:
        pack(list_path, root, output, SETTINGS, workers=1)
    assert str(caught.value) == (
        f"{output}: already holds a finished pack (manifest.json); "
        "use --resume to check and repair it or --overwrite to replace it"
    )


def test_resume_keeps_good_shards_and_rewrites_a_corrupted_one(packed_copy, labelled_list):
    root, list_path = labelled_list
    output = packed_copy
    original = PackDir(output).read_manifest_json()
    damaged = output / shard_name(2, 4)
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    untouched = {i: (output / shard_name(i, 4)).stat().st_mtime_ns for i in (0, 1, 3)}

    result = pack(list_path, root, output, SETTINGS, workers=1, resume=True)

    assert result.kept_shards == 3 and result.images_written == original["shards"][2]["count"]
    assert {i: (output / shard_name(i, 4)).stat().st_mtime_ns for i in (0, 1, 3)} == untouched
    assert file_sha256(damaged) == original["shards"][2]["sha256"]
    manifest = PackDir(output).read_manifest_json()
    assert manifest["shards"] == original["shards"]
    assert not list(output.glob("*.done")) and not (output / "pack-progress.json").exists()


def test_resume_of_an_intact_finished_pack_writes_nothing(packed_copy, labelled_list, monkeypatch):
    """Every shard, the index and the rejects match the manifest: the pack is checked and left as it is,
    so no moment of the check leaves it unfinished or its manifest disagreeing with its files."""
    from ffem_cli.data import pack as packing

    root, list_path = labelled_list
    output = packed_copy
    before = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in output.iterdir()}

    def no_writing(*args, **kwargs):
        raise AssertionError("an intact pack was written to")

    monkeypatch.setattr(packing, "_write_index", no_writing)
    monkeypatch.setattr(packing.atomic, "write_json", no_writing)
    monkeypatch.setattr(packing, "_write_done", no_writing)
    result = pack(list_path, root, output, SETTINGS, workers=1, resume=True)
    assert (result.kept_shards, result.images_written, result.images) == (4, 0, 36)
    assert {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in output.iterdir()} == before


def test_resume_repairs_a_finished_pack_whose_index_was_damaged(packed_copy, labelled_list):
    root, list_path = labelled_list
    output = packed_copy
    original = PackDir(output).read_manifest_json()
    index = output / "index.npz"
    index.write_bytes(index.read_bytes() + b"\0")  # still readable, but its sha256 no longer matches

    result = pack(list_path, root, output, SETTINGS, workers=1, resume=True)
    assert (result.kept_shards, result.images_written) == (4, 0)
    assert PackDir(output).manifest()["shards"] == original["shards"]
    assert not list(output.glob("*.done")) and not (output / "pack-progress.json").exists()


def test_resume_refuses_other_settings(packed_copy, labelled_list):
    root, list_path = labelled_list
    with pytest.raises(FfemError, match="made from another list or with other settings"):
        pack(list_path, root, packed_copy, PackSettings(shards=4, image_size=96), resume=True)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from ffem_cli.data import pack as packing

    calls = 0
    original = packing.encode_record

    def encode_then_die(*args, **kwargs):
        global calls
        calls += 1
        if calls == int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    packing.encode_record = encode_then_die
    overwrite = sys.argv[5:] == ["--overwrite"]
    packing.pack(sys.argv[1], sys.argv[2], sys.argv[3], packing.PackSettings(shards=4), workers=1, overwrite=overwrite)
    """
)


def test_killed_pack_leaves_nothing_that_looks_finished_and_resume_completes(packed, labelled_list, tmp_path):
    clean, _ = packed
    root, list_path = labelled_list
    output = tmp_path / "faces"
    # Shard 0 holds 9 images: die while writing the second shard.
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(list_path), str(root), str(output), "14"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    names = sorted(p.name for p in output.iterdir())
    assert "manifest.json" not in names and "index.npz" not in names
    assert finished_files(output) == [shard_name(0, 4)]
    assert any(n.startswith(".tmp-" + shard_name(1, 4)) for n in names)  # the half-written shard
    done = json.loads((output / (shard_name(0, 4) + ".done")).read_text())
    assert done["sha256"] == file_sha256(output / shard_name(0, 4))
    with pytest.raises(FfemError, match="not a finished pack"):
        PackDir(output).manifest()

    result = pack(list_path, root, output, SETTINGS, workers=1, resume=True)
    assert result.kept_shards == 1
    for i in range(4):
        assert file_sha256(output / shard_name(i, 4)) == file_sha256(clean / shard_name(i, 4))
    assert not [n for n in os.listdir(output) if n.startswith(".tmp-") or n.endswith(".done")]


def test_interrupted_pack_removes_its_temporary_shard(labelled_list, tmp_path, monkeypatch):
    from ffem_cli.data import pack as packing

    root, list_path = labelled_list
    calls = {"n": 0}
    original = packing.encode_record

    def encode_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(packing, "encode_record", encode_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pack(list_path, root, tmp_path / "faces", SETTINGS, workers=1)
    assert sorted(os.listdir(tmp_path / "faces")) == ["pack-progress.json"]


def test_corrupt_image_is_skipped_and_reported(labelled_list, tmp_path):
    root, list_path = labelled_list
    photos = tmp_path / "photos"
    shutil.copytree(root, photos)
    victim = "synthetic_3/002.jpg"
    data = (photos / victim).read_bytes()
    (photos / victim).write_bytes(data[: len(data) // 3])  # header intact, image data cut
    result = pack(list_path, photos, tmp_path / "faces", SETTINGS, workers=1)
    manifest = PackDir(tmp_path / "faces").read_manifest_json()
    assert manifest["num_examples"] == result.images == 35
    assert [(s["path"], s["reason"]) for s in manifest["skipped"]] == [(victim, "corrupt")]


# ---------------------------------------------------------------- bad input through the CLI


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def write_list(tmp_path: Path, source: Path, edit) -> Path:
    entries = json.loads(source.read_text())
    edit(entries)
    path = tmp_path / "bad_list.json"
    path.write_text(json.dumps(entries))
    return path


KEY = "synthetic_1/000.jpg"


@pytest.mark.parametrize(
    "case, edit, message",
    [
        (
            "missing file",
            lambda e: e.update({"synthetic_1/999.jpg": {**e[KEY]}}),
            '{root}: "synthetic_1/999.jpg": missing file',
        ),
        (
            "empty box",
            lambda e: e[KEY].update(x2=e[KEY]["x1"]),
            '{list}: "synthetic_1/000.jpg": box ({x1}, {y1}, {x1}, {y2}) is empty: need x2 > x1 and y2 > y1',
        ),
        (
            "non-integer label",
            lambda e: e[KEY].update(label="one"),
            '{list}: "synthetic_1/000.jpg": label "one" is not an integer',
        ),
        (
            "label gap",
            lambda e: [v.update(label=v["label"] + 1) for v in e.values() if v["label"] >= 2],
            "{list}: labels must be 0..N-1 without gaps: label 2 is missing (highest label 6); --relabel compacts them",
        ),
    ],
)
def test_bad_list_entry_is_named_and_nothing_is_written(labelled_list, tmp_path, case, edit, message):
    root, list_path = labelled_list
    bad = write_list(tmp_path, list_path, edit)
    box = json.loads(list_path.read_text())[KEY]
    output = tmp_path / "out"
    result = run_cli(bad, root, output)
    assert result.exit_code == 1, case
    assert error_line(result) == "error: " + message.format(root=root, list=bad, **box)
    assert finished_files(output) == []


def test_malformed_json_is_reported_with_its_position(labelled_list, tmp_path):
    root, _ = labelled_list
    bad = tmp_path / "broken.json"
    bad.write_text('{"a/1.jpg": {"label": 0,')
    result = run_cli(bad, root, tmp_path / "out")
    assert result.exit_code == 1
    assert error_line(result) == (
        f"error: {bad}: malformed JSON at line 1, column 25: Expecting property name enclosed in double quotes"
    )
    assert finished_files(tmp_path / "out") == []


@pytest.mark.parametrize("damage", ["malformed mid-file", "schema error in the last entry"])
def test_streamed_list_error_is_one_line_before_any_output(labelled_list, tmp_path, monkeypatch, damage):
    import ffem_cli.data.image_list as image_list

    root, list_path = labelled_list
    text = json.dumps(json.loads(list_path.read_text()), indent=1)
    if damage == "malformed mid-file":
        cut = text.index('"synthetic_3/')
        text, where = text[:cut] + "]" + text[cut:], "malformed JSON at line"
    else:
        last = text.rindex('"label": ')
        text, where = text[:last] + '"label": "x", "old": ' + text[last + 9 :], 'label "x" is not an integer'
    bad = tmp_path / "bad_list.json"
    bad.write_text(text)
    monkeypatch.setattr(image_list, "_CHUNK", 16)  # the error lies many chunks into the file
    output = tmp_path / "out"
    result = run_cli(bad, root, output)
    assert result.exit_code == 1
    assert error_line(result).startswith(f"error: {bad}: ") and where in error_line(result)
    assert not output.exists()


def test_align_without_landmarks_is_refused(labelled_list, tmp_path):
    root, list_path = labelled_list
    bad = write_list(tmp_path, list_path, lambda e: e[KEY].pop("landmarks"))
    result = run_cli(bad, root, tmp_path / "out", "--align")
    assert result.exit_code == 1
    assert error_line(result) == f"error: {bad}: entry '{KEY}' has no landmarks, which --align needs"
    assert finished_files(tmp_path / "out") == []


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--shards", "0", "--shards must be at least 1, got 0"),
        ("--workers", "0", "--workers must be at least 1, got 0"),
        ("--quality", "101", "--quality must be within 1..100, got 101"),
        ("--size", "8", "--size must be at least 16 pixels, got 8"),
    ],
)
def test_bad_options_are_refused(labelled_list, tmp_path, option, value, message):
    root, list_path = labelled_list
    result = run_cli(list_path, root, tmp_path / "out", option, value)
    assert result.exit_code == 1
    assert error_line(result) == f"error: {message}"
    assert finished_files(tmp_path / "out") == []


def pack_fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())}


def test_killed_overwrite_keeps_the_old_pack_and_a_rerun_replaces_it(packed, labelled_list, tmp_path):
    clean, _ = packed
    root, list_path = labelled_list
    output = tmp_path / "faces"
    shutil.copytree(clean, output)
    before = pack_fingerprint(output)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(list_path), str(root), str(output), "14", "--overwrite"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    assert pack_fingerprint(output) == before  # killed mid-shard: the old pack is whole
    assert (tmp_path / ".tmp-faces.new").is_dir()
    result = pack(list_path, root, output, SETTINGS, workers=1, overwrite=True, resume=True)
    assert result.kept_shards == 1  # --overwrite --resume continues the killed re-pack
    assert pack_fingerprint(output).keys() == before.keys()
    assert [p.name for p in tmp_path.iterdir()] == ["faces"]


def test_failed_overwrite_keeps_the_old_pack(packed, labelled_list, tmp_path):
    clean, _ = packed
    root, list_path = labelled_list
    output = tmp_path / "faces"
    shutil.copytree(clean, output)
    before = pack_fingerprint(output)
    broken = tmp_path / "photos"
    shutil.copytree(root, broken)
    for photo in broken.rglob("*.jpg"):
        photo.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])  # header readable, pixels cut
    with pytest.raises(FfemError, match="none of its 36 images could be packed"):
        pack(list_path, broken, output, SETTINGS, workers=1, overwrite=True)
    assert pack_fingerprint(output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces", "photos"]


def test_every_image_failing_leaves_no_pack_and_fails(labelled_list, tmp_path):
    root, list_path = labelled_list
    broken = tmp_path / "photos"
    shutil.copytree(root, broken)
    for photo in broken.rglob("*.jpg"):
        photo.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    result = run_cli(list_path, broken, tmp_path / "faces")
    assert result.exit_code == 1
    assert "error:" in result.output and "no pack written" in " ".join(result.output.split())
    assert not (tmp_path / "faces").exists()


def test_a_folder_that_is_not_a_pack_is_refused_and_left_alone(labelled_list, tmp_path):
    root, list_path = labelled_list
    folder = tmp_path / "stuff"
    folder.mkdir()
    for name, content in ((".tmp-notes", "draft"), ("index.npz", "mine"), ("a.txt", "keep")):
        (folder / name).write_text(content)
    result = run_cli(list_path, root, folder)
    assert result.exit_code == 1
    assert "exists and is not an ffem pack" in " ".join(result.output.split())
    assert sorted((p.name, p.read_text()) for p in folder.iterdir()) == [
        (".tmp-notes", "draft"),
        ("a.txt", "keep"),
        ("index.npz", "mine"),
    ]


def test_a_pack_holding_a_foreign_file_is_not_overwritten(packed, labelled_list, tmp_path):
    clean, _ = packed
    root, list_path = labelled_list
    output = tmp_path / "faces"
    shutil.copytree(clean, output)
    (output / "README.txt").write_text("notes")
    result = run_cli(list_path, root, output, "--overwrite", shards=4)
    assert result.exit_code == 1 and "holds 'README.txt' that ffem did not write there" in result.output
    assert (output / "README.txt").read_text() == "notes"


def test_shards_are_capped_at_the_number_of_images(labelled_list, tmp_path):
    root, list_path = labelled_list
    result = run_cli(list_path, root, tmp_path / "faces", shards=100000)
    assert result.exit_code == 0, result.output
    assert "note: --shards 100000 capped at 36, the number of images" in result.output
    assert len(list((tmp_path / "faces").glob("faces-*.tfrecord"))) == 36


def test_images_through_a_symlink_out_of_root_are_refused(labelled_list, tmp_path):
    root, list_path = labelled_list
    copy = tmp_path / "photos"
    shutil.copytree(root, copy)
    key = next(iter(load_image_list(list_path)))
    outside = tmp_path / "outside.jpg"
    shutil.move(copy / key, outside)
    (copy / key).symlink_to(outside)
    result = run_cli(list_path, copy, tmp_path / "faces")
    assert result.exit_code == 1
    assert f'"{key}": outside-root (a symlink to {outside}, outside ROOT' in " ".join(result.output.split())
    assert run_cli(list_path, copy, tmp_path / "faces", "--follow-symlinks").exit_code == 0


@pytest.mark.parametrize(
    ("landmarks", "problem"),
    [
        ([[50.0, 60.0]] * 5, "entry '{key}': degenerate landmarks (all five points within one pixel)"),
        ([[1e200, 1e200]] * 5, '"{key}": landmarks lie beyond ±1e+06 pixels'),
        ([[3e7, 10.0], [40.0, 10.0], [30.0, 30.0], [20.0, 40.0], [40.0, 40.0]], '"{key}": landmarks lie beyond'),
    ],
)
def test_unusable_landmarks_are_refused_before_packing_with_align(labelled_list, tmp_path, landmarks, problem):
    root, list_path = labelled_list
    raw = json.loads(list_path.read_text())
    key = sorted(raw)[3]
    raw[key]["landmarks"] = landmarks
    bad = tmp_path / "image_list.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(FfemError, match=re.escape(problem.format(key=key))):
        pack(bad, root, tmp_path / "faces", PackSettings(shards=4, crop="align"), workers=1)
    assert not (tmp_path / "faces").exists()


def test_a_nan_margin_is_refused(labelled_list, tmp_path):
    root, list_path = labelled_list
    result = run_cli(list_path, root, tmp_path / "faces", "--margin", "nan")
    assert result.exit_code == 1 and "--margin must be a number within 0..10, got nan" in result.output


def test_python_tfrecord_writer_is_byte_identical_to_tf_io(tmp_path):
    """The worker's TensorFlow-free framing + Example encoding equals tf.io's bytes, and tf.data reads it back."""
    import tensorflow as tf

    from ffem_cli.data.tfrecord import encode_example, tfrecord_frame

    examples = [
        (b"", 0, "a.jpg"),
        (b"\xff\xd8" * 100, 127, "caf\u00e9/\u2603.jpg"),
        (bytes(range(256)) * 90, 2**31 - 1, "x" * 300),
    ]
    ours = tmp_path / "ours.tfrecord"
    ours.write_bytes(b"".join(tfrecord_frame(encode_example(*example)) for example in examples))
    theirs = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for encoded, label, path in examples:
            writer.write(
                tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                            "image/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                            "image/path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()])),
                        }
                    )
                ).SerializeToString(deterministic=True)
            )  # map entries by key, as the pack writer orders them
    assert ours.read_bytes() == theirs.read_bytes()
    assert read_records(ours) == examples


def test_progress_from_two_workers_counts_every_image_once(labelled_list, tmp_path):
    root, list_path = labelled_list
    seen = []
    result = pack(list_path, root, tmp_path / "p", SETTINGS, workers=2, on_progress=lambda d, t: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert seen[0] == (0, 36) and seen[-1] == (36, 36) and result.images == 36
    assert done == sorted(done) and {t for _, t in seen} == {36}
