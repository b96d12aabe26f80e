"""images.py, the one decoder: 16-bit PNGs, decompression bombs, huge photos, the input-path rule."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ffem_cli.images import (
    ImageReadError,
    ImageRoot,
    image_size,
    open_rgb,
    path_under,
    read_rgb,
    scan_identity_folder,
)


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A tiny PNG whose header claims ``width x height`` pixels (its data is one empty row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )
    return path


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    pixels = read_rgb(tmp_path / "deep.png")
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert np.mean(pixels == 255) < 0.01  # clipping made 99.6% of them white
    np.testing.assert_allclose(pixels[..., 0], np.round(ramp / 257.0), atol=1)


def test_decompression_bomb_is_rejected_with_its_reason(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100
    for read in (read_rgb, image_size):
        with pytest.raises(ImageReadError) as caught:
            read(bomb)
        assert caught.value.reason == "too-large"
        assert "30000x30000 = 900,000,000 pixels, over --max-pixels" in caught.value.detail
    with pytest.raises(ImageReadError, match="too-large"):
        read_rgb(bomb_png(tmp_path / "small.png", 200, 200), max_pixels=100 * 100)


def test_no_raw_decompression_bomb_warning_reaches_the_console(tmp_path):
    """A header between Pillow's warning and error limits (100 megapixels) used to print Pillow's warning."""
    big = bomb_png(tmp_path / "big.png", 10000, 10000)
    script = "import sys; from ffem_cli.images import image_size; print(image_size(sys.argv[1]))"
    shown = subprocess.run([sys.executable, "-c", script, str(big)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "(10000, 10000)"
    assert "DecompressionBombWarning" not in shown.stderr


def test_max_side_shrinks_a_big_photo_while_decoding(tmp_path):
    Image.fromarray(np.full((1500, 3000, 3), 90, np.uint8)).save(tmp_path / "wide.jpg")
    assert read_rgb(tmp_path / "wide.jpg", max_side=400).shape == (200, 400, 3)
    assert open_rgb(tmp_path / "wide.jpg").size == (3000, 1500)


def test_path_under_refuses_paths_and_links_leaving_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret.jpg"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(outside)
    (root / "a" / "link.jpg").symlink_to(outside)
    (root / "a" / "inside.jpg").symlink_to(root / "a" / "real.jpg")
    for rel in ("../secret.jpg", str(outside), "a/../../secret.jpg", "a/link.jpg"):
        with pytest.raises(ImageReadError) as caught:
            path_under(root, rel)
        assert caught.value.reason == "outside-root", rel
    assert path_under(root, "a/link.jpg", follow_symlinks=True) == root / "a/link.jpg"
    assert path_under(root, "a/inside.jpg") == root / "a/inside.jpg"


def test_one_image_root_answers_every_path_as_path_under_does(tmp_path):
    """``ImageRoot`` checks each folder once; the answers must not depend on what it asked before."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    for folder in (root / "a", root / "b", elsewhere):
        folder.mkdir(parents=True)
    for folder in (root / "a", root / "b", elsewhere):
        Image.new("RGB", (8, 8)).save(folder / "1.jpg")
    (root / "a" / "escape.jpg").symlink_to(elsewhere / "1.jpg")
    (root / "linked").symlink_to(root / "b")  # a folder link that stays inside
    (root / "out").symlink_to(elsewhere)  # a folder link that leaves
    rels = ["a/1.jpg", "a/escape.jpg", "linked/1.jpg", "out/1.jpg", "a/1.jpg", "out/1.jpg", "nothing/1.jpg"]

    def answer(check, rel):
        try:
            return check(rel)
        except ImageReadError as exc:
            return exc.reason, exc.detail

    shared = ImageRoot(root)
    expected = [answer(lambda rel: path_under(root, rel), rel) for rel in rels]
    assert [answer(shared.path, rel) for rel in rels] == expected
    assert [answer(shared.path, rel) for rel in reversed(rels)] == expected[::-1]
    assert [isinstance(item, tuple) for item in expected] == [False, True, False, True, False, True, False]


def test_broken_and_looping_links_are_listed_and_read_with_reasons(tmp_path):
    ident = tmp_path / "a"
    ident.mkdir()
    Image.new("RGB", (8, 8)).save(ident / "ok.jpg")
    (ident / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (ident / "loop.jpg").symlink_to(ident / "loop.jpg")
    assert scan_identity_folder(tmp_path).paths == ["a/gone.jpg", "a/loop.jpg", "a/ok.jpg"]
    reasons = {}
    for rel in ("a/gone.jpg", "a/loop.jpg"):
        with pytest.raises(ImageReadError) as caught:
            read_rgb(tmp_path / rel)
        reasons[rel] = (caught.value.reason, caught.value.detail)
    assert reasons["a/gone.jpg"] == ("missing", f"broken symlink to {tmp_path / 'nowhere.jpg'}")
    assert reasons["a/loop.jpg"][0] == "symlink-loop"


def test_non_utf8_file_names_are_listed(tmp_path):
    ident = tmp_path / "a"
    ident.mkdir()
    Image.new("RGB", (8, 8)).save(os.fsdecode(bytes(ident) + b"/latin1_\xff\xfe.jpg"))
    (name,) = scan_identity_folder(tmp_path).paths
    assert os.fsencode(name) == b"a/latin1_\xff\xfe.jpg"


def test_fifos_and_nul_characters_are_rejected_not_hung_on(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    for read in (image_size, read_rgb):
        with pytest.raises(ImageReadError, match="not a regular file"):
            read(tmp_path / "fifo.jpg")  # Image.open used to wait forever for a writer
    with pytest.raises(ImageReadError) as caught:
        path_under(tmp_path, "a/\0.jpg")  # was a ValueError traceback
    assert caught.value.reason == "bad-name"


def test_image_size_reads_plain_jpeg_headers_itself_and_asks_pil_otherwise(tmp_path):
    """The JPEG fast path gives PIL's answer; EXIF, PNG and damaged headers still go through PIL."""
    import io

    from ffem_cli.images import jpeg_size

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    exif = picture.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: width and height swap
    files = {
        "baseline.jpg": {"format": "JPEG"},
        "progressive.jpg": {"format": "JPEG", "progressive": True},
        "rotated.jpg": {"format": "JPEG", "exif": exif},
        "plain.png": {"format": "PNG"},
    }
    for name, options in files.items():
        picture.save(tmp_path / name, **options)
    assert jpeg_size((tmp_path / "baseline.jpg").read_bytes()) == (50, 30)
    assert jpeg_size((tmp_path / "progressive.jpg").read_bytes()) == (50, 30)
    assert jpeg_size((tmp_path / "rotated.jpg").read_bytes()) is None  # EXIF: PIL decides
    assert [image_size(tmp_path / name) for name in files] == [(50, 30), (50, 30), (30, 50), (50, 30)]
    whole = (tmp_path / "baseline.jpg").read_bytes()
    start_of_scan = whole.index(b"\xff\xda")
    (tmp_path / "cut.jpg").write_bytes(whole[: start_of_scan - 20])  # ends inside the tables before the scan
    assert jpeg_size((tmp_path / "cut.jpg").read_bytes()) is None
    with pytest.raises(ImageReadError) as caught:
        image_size(tmp_path / "cut.jpg")
    assert caught.value.reason == "corrupt"
    assert image_size("x.jpg", data=whole) == (50, 30) and jpeg_size(io.BytesIO(whole).read(2)) is None
