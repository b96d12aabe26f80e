"""`ffem inspect`: counts of packs and sources, the two PNGs, and --verify naming damaged records."""

from __future__ import annotations

import json

from face_sources import jpeg, write_recordio
from PIL import Image
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data.packdir import PackDir

FACES = [(label, jpeg((112, 112), 5 * label + i)) for label, count in enumerate([1, 3, 5]) for i in range(count)]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_inspect_recordio_and_its_pack_with_pictures(tmp_path):
    rec = write_recordio(tmp_path / "rec", FACES)
    result = run("inspect", rec)
    assert result.exit_code == 0, result.output
    assert "insightface-recordio" in result.output and "1 / 3.0 / 5" in result.output
    assert run("pack", rec, "-o", tmp_path / "p", "--shards", "2").exit_code == 0
    result = run("inspect", tmp_path / "p", "--output", tmp_path / "look", "--verify")
    assert result.exit_code == 0, result.output
    assert "1 / 3.0 / 5" in result.output and "verified" in result.output
    with Image.open(tmp_path / "look" / "contact_sheet.png") as sheet:
        assert sheet.size == (8 * 112, 2 * (112 + 14))  # 9 faces: two rows of eight
    with Image.open(tmp_path / "look" / "images_per_identity.png") as histogram:
        assert histogram.format == "PNG"


def test_verify_names_the_damaged_record_by_shard_and_offset(tmp_path):
    rec = write_recordio(tmp_path / "rec", FACES)
    assert run("pack", rec, "-o", tmp_path / "p", "--shards", "1").exit_code == 0
    shard = next((tmp_path / "p").glob("faces-*.tfrecord"))
    with __import__("numpy").load(PackDir(tmp_path / "p").index_path) as index:
        offset = int(index["offset"][3]) - 12  # the frame starts 12 bytes before its payload
        length = int(index["length"][3])
    data = bytearray(shard.read_bytes())
    data[offset + 12 + length // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run("inspect", tmp_path / "p", "--verify")
    assert result.exit_code == 1
    assert f"damaged: {shard.name}: record at byte {offset}: the data CRC does not match" in result.output
    assert result.output.count("damaged:") == 1
    assert "error: " in result.output and "1 problem found" in result.output


def test_inspect_image_list_counts_clipped_and_rejected(tmp_path):
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.jpg").write_bytes(jpeg((100, 100), 1))
    (root / "a" / "2.jpg").write_bytes(jpeg((100, 100), 2))
    entries = {
        "a/1.jpg": {"label": 0, "x1": -5, "y1": 0, "x2": 50, "y2": 50},
        "a/2.jpg": {"label": 0, "x1": 200, "y1": 0, "x2": 250, "y2": 50},
    }
    (tmp_path / "image_list.json").write_text(json.dumps(entries))
    result = run("inspect", tmp_path / "image_list.json", "--root", root)
    assert result.exit_code == 0, result.output
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.output.splitlines()
        if line.count("│") == 3
    }
    assert lines["images"] == "1" and lines["boxes clipped"] == "1" and lines["rejected (box outside)"] == "1"


def test_verify_on_a_source_is_refused(tmp_path):
    rec = write_recordio(tmp_path / "rec", FACES)
    result = run("inspect", rec, "--verify")
    assert result.exit_code == 1
    assert "error: --verify checks a finished ffem pack" in result.output
