"""`ffem pack` from insightface RecordIO, seed TFRecords, crop folders and loose boxes; every bad input."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from face_sources import jpeg, recordio_record, write_recordio, write_seed_tfrecord
from PIL import Image
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data.crop import crop_face
from ffem_cli.data.packdir import PackDir
from ffem_cli.data.tfrecord import iter_frames, parse_example


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def pack_records(output: Path) -> list[tuple[bytes, int, str]]:
    """(JPEG, label, path) of every example of a pack, in shard order."""
    records = []
    for shard in sorted(output.glob("faces-*.tfrecord")):
        with open(shard, "rb") as handle:
            for _, payload in iter_frames(handle):
                example = parse_example(payload)
                records.append(
                    (example["image/encoded"][0], example["image/label"][0], example["image/path"][0].decode())
                )
    return records


def nothing_finished(output: Path) -> bool:
    return not output.exists() or not any(
        p.name == "manifest.json" or p.name.endswith(".tfrecord") for p in output.iterdir()
    )


FACES = [(label, jpeg((112, 112), seed=10 * label + i)) for label in range(3) for i in range(4)]


@pytest.fixture
def recordio(tmp_path):
    return write_recordio(tmp_path / "ms1m", FACES)


# ---------------------------------------------------------------- insightface RecordIO


def test_recordio_faces_at_the_pack_size_are_copied_through_unchanged(recordio, tmp_path):
    result = run("pack", recordio / "train.rec", "-o", tmp_path / "p", "--shards", "2", "--workers", "1")
    assert result.exit_code == 0, result.output
    records = pack_records(tmp_path / "p")
    assert sorted((image, label) for image, label, _ in records) == sorted((image, label) for label, image in FACES)
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert manifest["sources"][0]["format"] == "insightface-recordio"
    assert len(manifest["sources"][0]["fingerprint"]) == 64
    assert (manifest["num_examples"], manifest["num_classes"]) == (12, 3)
    assert "copied through undecoded" in result.output and "12" in result.output


def test_recordio_faces_of_another_size_are_resized(recordio, tmp_path):
    result = run("pack", recordio, "-o", tmp_path / "p", "--shards", "1", "--size", "96")
    assert result.exit_code == 0, result.output
    for image, _, _ in pack_records(tmp_path / "p"):
        assert Image.open(io.BytesIO(image)).size == (96, 96)


def test_recordio_without_index_record_and_with_label_arrays(tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    records = [recordio_record(jpeg((112, 112), i), 0.0, (float(i % 2), 7.0)) for i in range(4)]
    offsets = np.cumsum([0] + [len(r) for r in records[:-1]])
    (folder / "train.rec").write_bytes(b"".join(records))
    (folder / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets, start=1)))
    (folder / "property").write_text("2,112,112")
    result = run("pack", folder, "-o", tmp_path / "p", "--shards", "1")
    assert result.exit_code == 0, result.output
    assert sorted(label for _, label, _ in pack_records(tmp_path / "p")) == [0, 0, 1, 1]


def _damage(recordio: Path, case: str) -> str:
    """Damage the set as ``case`` says; return the expected error's distinctive part."""
    rec, idx = recordio / "train.rec", recordio / "train.idx"
    lines = idx.read_text().splitlines()
    if case == "truncated .rec":
        data = rec.read_bytes()
        rec.write_bytes(data[: len(data) - 900])
        return "the .rec is truncated or the idx is not its own"
    if case == "idx offset past the end":
        key, _ = lines[5].split("\t")
        lines[5] = f"{key}\t{rec.stat().st_size + 100}"
        idx.write_text("\n".join(lines) + "\n")
        return f"key {key} points at byte {rec.stat().st_size + 100}, past the end of train.rec"

    if case == "record cut inside its image":
        data = rec.read_bytes()
        last_image = int(lines[12].split("\t")[1])
        rec.write_bytes(data[: last_image + 100])
        idx.write_text("\n".join(lines[:13]) + "\n")
        return f"truncated: record 12 at byte {last_image} needs"
    if case == "bad magic":
        data = bytearray(rec.read_bytes())
        offset = int(lines[3].split("\t")[1])
        data[offset : offset + 4] = b"\x00\x01\x02\x03"
        rec.write_bytes(bytes(data))
        return f"record 3 at byte {offset} has a bad magic"
    if case == "header points past the idx":
        idx.write_text("\n".join(lines[:8]) + "\n")  # keys 8.. (images 8..12, identities) gone
        return "record 0 says images are keys 1..12, but key 8 is not in train.idx"
    if case == "property disagrees with the labels":
        (recordio / "property").write_text("5,112,112")
        return "says 5 classes, but the records' labels run 0..2"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "truncated .rec",
        "record cut inside its image",
        "idx offset past the end",
        "bad magic",
        "header points past the idx",
        "property disagrees with the labels",
    ],
)
def test_damaged_recordio_gives_one_error_line_and_no_pack(recordio, tmp_path, case):
    expected = _damage(recordio, case)
    result = run("pack", recordio, "-o", tmp_path / "p")
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert expected in line, line
    assert "Traceback" not in result.output
    assert nothing_finished(tmp_path / "p")


# ---------------------------------------------------------------- seed TFRecords


def _photo(seed: int) -> bytes:
    return jpeg((200, 160), seed)


def test_seed_tfrecord_is_cropped_with_the_pack_settings(tmp_path):
    items = [(_photo(i), i % 2, (40, 30, 120, 130)) for i in range(4)]
    items.append((_photo(9), 1, (-20, 100, 60, 200)))  # crosses the border: clipped, padded
    items.append((_photo(8), 0, (300, 10, 400, 90)))  # no pixel inside: rejected
    source = write_seed_tfrecord(tmp_path / "train.tfrecord", items)
    result = run("pack", source, "-o", tmp_path / "p", "--shards", "1", "--size", "64", "--margin", "0.1")
    assert result.exit_code == 0, result.output
    by_key = {key: (image, label) for image, label, key in pack_records(tmp_path / "p")}
    assert len(by_key) == 5
    offsets = [offset for offset, _ in iter_frames(open(source, "rb"))]
    image, label = by_key[f"train.tfrecord@{offsets[0]}"]
    expected = crop_face(
        np.asarray(Image.open(io.BytesIO(items[0][0])).convert("RGB")), items[0][2], size=64, margin=0.1
    )
    got = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), dtype=np.int16)
    assert label == 0 and np.abs(got - expected).mean() < 3  # JPEG round trip only
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert manifest["boxes_clipped"] == 1 and manifest["num_rejected"] == 1
    rejects = json.loads((tmp_path / "p" / "rejects.json").read_text())
    assert [(r["path"], r["reason"]) for r in rejects] == [(f"train.tfrecord@{offsets[5]}", "box-outside")]
    assert manifest["sources"][0]["format"] == "seed-tfrecord"


def test_seed_tfrecord_strict_boxes_refuses_a_clipped_box(tmp_path):
    source = write_seed_tfrecord(tmp_path / "t.tfrecord", [(_photo(1), 0, (-5, 0, 50, 50))])
    result = run("pack", source, "-o", tmp_path / "p", "--strict-boxes")
    assert result.exit_code == 1
    assert "box (-5, 0, 50, 50) lies outside the 200x160 image" in error_line(result)
    assert nothing_finished(tmp_path / "p")


def test_tfrecord_without_jpeg_is_refused(tmp_path):
    source = write_seed_tfrecord(tmp_path / "t.tfrecord", [(_photo(1), 0, (0, 0, 50, 50))], drop="jpeg")
    result = run("pack", source, "-o", tmp_path / "p")
    assert result.exit_code == 1
    assert error_line(result) == (
        f"error: {source}: record at byte 0: no 'jpeg' feature; a seed FFEM TFRecord holds "
        "jpeg, label, x1, y1, x2, y2 (ffem packs are read by train, not pack)"
    )
    assert nothing_finished(tmp_path / "p")


# ---------------------------------------------------------------- crops and image lists


def _crops(root: Path, layout: dict[str, list[tuple[int, int]]]) -> Path:
    for n, (folder, sizes) in enumerate(layout.items()):
        (root / folder).mkdir(parents=True)
        for i, size in enumerate(sizes):
            (root / folder / f"{i}.jpg").write_bytes(jpeg(size, 100 * n + i))
    return root


def test_crops_folder_passes_faces_through_and_resizes_others(tmp_path):
    root = _crops(tmp_path / "crops", {"ann": [(112, 112), (112, 112)], "bob": [(90, 120)]})
    result = run("pack", root, "--crops", "-o", tmp_path / "p", "--shards", "1")
    assert result.exit_code == 0, result.output
    records = {key: (image, label) for image, label, key in pack_records(tmp_path / "p")}
    assert records["ann/0.jpg"] == ((root / "ann/0.jpg").read_bytes(), 0)
    assert Image.open(io.BytesIO(records["bob/0.jpg"][0])).size == (112, 112)
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert manifest["label_map"] == {"ann": 0, "bob": 1}


def test_grouped_crops_can_be_shaped_by_group(tmp_path):
    root = _crops(
        tmp_path / "bupt",
        {"African/m1": [(112, 112)] * 2, "Asian/m2": [(112, 112)] * 3, "Asian/m3": [(112, 112)]},
    )
    result = run("pack", root, "--crops", "-o", tmp_path / "p", "--shards", "1", "--groups", "Asian")
    assert result.exit_code == 0, result.output
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert manifest["label_map"] == {"Asian/m2": 0, "Asian/m3": 1}
    assert manifest["label_groups"] == ["Asian", "Asian"] and manifest["num_examples"] == 4
    result = run("pack", root, "--crops", "-o", tmp_path / "q", "--groups", "Martian")
    assert error_line(result) == "error: --groups: no group 'Martian' (groups: African, Asian)"


def test_crops_follow_the_input_path_rule_and_guarded_reads(tmp_path):
    root = _crops(tmp_path / "crops", {"ann": [(112, 112), (112, 112)], "bob": [(112, 112)]})
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(jpeg((112, 112), 7))
    (root / "bob" / "out.jpg").symlink_to(outside)
    (root / "bob" / "gone.jpg").symlink_to(root / "bob" / "deleted.jpg")
    (root / os.fsdecode(b"caf\xe9")).mkdir()
    (root / os.fsdecode(b"caf\xe9") / "1.jpg").write_bytes(jpeg((112, 112), 8))
    result = run("pack", root, "--crops", "-o", tmp_path / "p", "--shards", "1")
    assert result.exit_code == 0, result.output
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert {(s["path"], s["reason"]) for s in manifest["skipped"]} == {
        ("bob/out.jpg", "outside-root"),
        ("bob/gone.jpg", "missing"),
    }
    assert manifest["num_examples"] == 3 and manifest["label_map"] == {"ann": 0, "bob": 1}
    rejects = json.loads((tmp_path / "p" / "rejects.json").read_text())
    assert [(r["path"], r["reason"]) for r in rejects] == [("caf\\xe9/1.jpg", "bad-name")]
    # A pack with rejects.json is still a pack: --overwrite replaces it, and the link may be followed.
    result = run("pack", root, "--crops", "-o", tmp_path / "p", "--shards", "1", "--overwrite", "--follow-symlinks")
    assert result.exit_code == 0, result.output
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert manifest["num_examples"] == 4 and "bob/out.jpg" not in {s["path"] for s in manifest["skipped"]}


def _list(tmp_path: Path, boxes: dict[str, tuple[int, tuple[int, int, int, int]]]) -> tuple[Path, Path]:
    root = tmp_path / "photos"
    entries = {}
    for n, (key, (label, (x1, y1, x2, y2))) in enumerate(boxes.items()):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(_photo(n))
        entries[key] = {"label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
    path = tmp_path / "image_list.json"
    path.write_text(json.dumps(entries))
    return path, root


def test_loose_boxes_are_clipped_counted_and_rejected_without_stopping_the_pack(tmp_path):
    list_path, root = _list(
        tmp_path,
        {
            "a/1.jpg": (0, (10, 10, 90, 90)),
            "a/2.jpg": (0, (-15, -8, 80, 100)),
            "b/1.jpg": (1, (150, 100, 260, 190)),
            "b/2.jpg": (1, (210, 0, 260, 50)),
        },
    )
    result = run("pack", list_path, "--root", root, "-o", tmp_path / "p", "--shards", "1")
    assert result.exit_code == 0, result.output
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert (manifest["num_examples"], manifest["boxes_clipped"], manifest["num_rejected"]) == (3, 2, 1)
    rejects = json.loads((tmp_path / "p" / "rejects.json").read_text())
    assert [(r["path"], r["reason"], r["detail"], r["source"]) for r in rejects] == [
        ("b/2.jpg", "box-outside", "box (210, 0, 260, 50) lies outside the 200x160 image", tmp_path.name)
    ]
    result = run("pack", list_path, "--root", root, "-o", tmp_path / "q", "--strict-boxes")
    assert result.exit_code == 1
    assert error_line(result) == (
        f'error: {root}: "a/2.jpg": box (-15, -8, 80, 100) lies outside the 200x160 image (and 2 more problems)'
    )
    assert nothing_finished(tmp_path / "q")


def test_relabel_compacts_gaps_and_records_old_to_new(tmp_path):
    list_path, root = _list(tmp_path, {"a/1.jpg": (0, (10, 10, 90, 90)), "c/1.jpg": (2, (10, 10, 90, 90))})
    result = run("pack", list_path, "--root", root, "-o", tmp_path / "p")
    assert error_line(result) == (
        f"error: {list_path}: labels must be 0..N-1 without gaps: label 1 is missing (highest label 2); "
        "--relabel compacts them"
    )
    result = run("pack", list_path, "--root", root, "-o", tmp_path / "p", "--relabel", "--shards", "1")
    assert result.exit_code == 0, result.output
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert manifest["label_origin"] == [[[0, 0]], [[0, 2]]] and manifest["num_classes"] == 2
    assert sorted((key, label) for _, label, key in pack_records(tmp_path / "p")) == [("a/1.jpg", 0), ("c/1.jpg", 1)]


def test_unknown_source_is_named():
    result = run("pack", "/nonexistent/x.rec", "-o", "/tmp/never")
    assert error_line(result) == "error: /nonexistent/x.rec: no such file or folder"


def test_recordio_reader_rejects_split_records(tmp_path):
    folder = write_recordio(tmp_path / "r", FACES[:2], index_record=False)
    data = bytearray((folder / "train.rec").read_bytes())
    word = struct.unpack_from("<I", data, 4)[0]
    struct.pack_into("<I", data, 4, word | (1 << 29))
    (folder / "train.rec").write_bytes(bytes(data))
    result = run("pack", folder, "-o", tmp_path / "p")
    assert "is split over several parts" in error_line(result)


def test_depth_2_image_list_is_shaped_by_group_and_merged_with_recordio(recordio, tmp_path):
    list_path, root = _list(
        tmp_path, {"African/m1/1.jpg": (0, (10, 10, 90, 90)), "Asian/m2/1.jpg": (1, (10, 10, 90, 90))}
    )
    entries = json.loads(list_path.read_text())
    entries["African/m1/1.jpg"]["group"], entries["Asian/m2/1.jpg"]["group"] = "African", "Asian"
    list_path.write_text(json.dumps(entries))
    (tmp_path / "image_list.label_map.json").write_text(json.dumps({"African/m1": 0, "Asian/m2": 1}))
    result = run("pack", list_path, "--root", root, "-o", tmp_path / "p", "--groups", "Asian", "--shards", "1")
    assert result.exit_code == 0, result.output
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert manifest["label_map"] == {"Asian/m2": 0} and manifest["label_groups"] == ["Asian"]
    result = run(
        "pack",
        list_path,
        recordio,
        "--root",
        root,
        "-o",
        tmp_path / "q",
        "--shards",
        "1",
        "--identities",
        "3",
        "--seed",
        "1",
    )
    assert result.exit_code == 0, result.output
    manifest = PackDir(tmp_path / "q").read_manifest_json()
    assert manifest["num_classes"] == 3 and manifest["shaping"]["identities"] == 3
    assert {s["format"] for s in manifest["sources"]} == {"image-list", "insightface-recordio"}
    assert all("/" in name for name in manifest["label_map"])  # prefixed by their source
