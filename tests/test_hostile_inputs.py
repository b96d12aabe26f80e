"""Bad inputs outside detect/pack: eval pair paths, RFW landmarks, face folders, config encodings.

Each case once gave a traceback or read outside the folder it was given; now it is one ``FfemError`` line.
"""

from __future__ import annotations

import os

import pytest
from PIL import Image

from ffem_cli.errors import FfemError
from ffem_cli.evaluate.pairfiles import check_images_exist, read_label_pairs, read_rfw_landmarks
from ffem_cli.inference.embedding import folder_sources
from ffem_cli.rundir import RunDir
from ffem_cli.train.config import read_config_file


@pytest.fixture
def photos(tmp_path):
    """``tmp_path/root/a/{1,2}.jpg`` and ``tmp_path/secret.jpg`` outside it; returns the root."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    for path in (root / "a/1.jpg", root / "a/2.jpg", tmp_path / "secret.jpg"):
        Image.new("RGB", (16, 16), (90, 90, 90)).save(path)
    return root


@pytest.mark.parametrize("outside", ["../secret.jpg", "{tmp}/secret.jpg", "a/link.jpg"])
def test_eval_pairs_refuses_paths_leaving_the_root(photos, tmp_path, outside):
    (photos / "a/link.jpg").symlink_to(tmp_path / "secret.jpg")
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text(f"1,a/1.jpg,a/2.jpg\n0,a/1.jpg,{outside.format(tmp=tmp_path)}\n")
    with pytest.raises(FfemError, match=f"pairs.csv line 2: image .*; eval reads only under {photos}"):
        check_images_exist(read_label_pairs(pairs_file), photos)


def test_face_folders_refuse_links_out_and_names_that_are_not_utf8(photos, tmp_path):
    (photos / "a/link.jpg").symlink_to(tmp_path / "secret.jpg")
    with pytest.raises(FfemError, match="a symlink to .*secret.jpg, outside ROOT"):
        folder_sources(photos, ["a/1.jpg", "a/link.jpg"])
    odd = os.fsdecode(b"a/latin1_\xff\xfe.jpg")
    with pytest.raises(FfemError, match=r"the file name 'a/latin1_\\\\xff\\\\xfe.jpg' is not UTF-8; rename it"):
        folder_sources(photos, ["a/1.jpg", odd])


@pytest.mark.parametrize("value", ["nan", "1e200", "inf"])
def test_rfw_landmarks_must_be_finite_pixels(tmp_path, value):
    lmk = tmp_path / "African_lmk.txt"
    lmk.write_text(f"m.1/a.jpg 0 {' '.join(['10.0'] * 9)} {value}\n")
    with pytest.raises(FfemError, match="line 1: landmark coordinates must be finite pixels within ±1e\\+06"):
        read_rfw_landmarks(lmk)


def test_config_files_that_are_not_utf8_are_one_line(tmp_path):
    config = tmp_path / "train.toml"
    config.write_bytes(b'[train]\nloss = "arc\xff"\n')
    with pytest.raises(FfemError, match=r"train.toml: not UTF-8 text \(byte 19\); TOML files are UTF-8"):
        read_config_file(config)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.toml").write_bytes(b"[data]\nimage_size = 112 # \xfe\n")
    with pytest.raises(FfemError, match="run.toml: not UTF-8 text"):
        RunDir(run).read_config()


def test_an_unreadable_lfw_photo_is_left_to_the_embedding_step(tmp_path):
    import numpy as np

    from ffem_cli.evaluate import lfw
    from ffem_cli.evaluate.pairfiles import PairList

    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    pairs = PairList(tmp_path / "pairs.txt", ["bad.jpg"], ["bad.jpg"], np.array([True]), np.zeros(1, np.int64), [2])
    sources, counts = lfw._sources(pairs, tmp_path, detect=False)
    assert counts == {lfw.FIXED_BOX: 1} and sources["bad.jpg"].path == (tmp_path / "bad.jpg").resolve()
