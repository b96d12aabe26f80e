"""Atomic writes: complete file or nothing, ordinary permissions, disk-full as FfemError."""

import errno
import os

import pytest

from ffem_cli import atomic
from ffem_cli.errors import FfemError


def test_write_json_is_complete_and_has_umask_permissions(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failure_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_disk_full_is_one_clear_error(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FfemError, match=r"disk full while writing .*out\.bin; nothing was written under that name"):
        atomic.write_bytes(tmp_path / "out.bin", b"x" * 10)
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_only_when_complete(tmp_path):
    target = tmp_path / "model"
    with atomic.atomic_directory(target) as staging:
        (staging / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(RuntimeError), atomic.atomic_directory(target) as staging:
        (staging / "b").write_text("2")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == [atomic.OUTPUT_MARKER, "a"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_directory_refuses_a_folder_ffem_did_not_write(tmp_path):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FfemError, match=r"photos: exists and was not written by ffem \(no \.ffem-output marker\)"):
        with atomic.atomic_directory(user) as staging:
            (staging / "report.json").write_text("{}")
    assert (user / "holiday.jpg").read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]


def test_an_ffem_folder_is_replaced_until_someone_adds_a_file(tmp_path):
    target = tmp_path / "eval"
    for _ in range(2):
        with atomic.atomic_directory(target) as staging:
            (staging / "report.json").write_text("{}")
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FfemError, match=r"holds 'notes.txt' that ffem did not write there"):
        atomic.check_owned(target)
    assert (target / "notes.txt").read_text() == "mine"


def test_files_and_the_working_folder_are_never_replaced(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(FfemError, match="exists and is not a folder"):
        atomic.check_owned(tmp_path / "a.txt")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in (".", str(work), str(tmp_path)):
        with pytest.raises(FfemError, match="is the working folder"):
            with atomic.atomic_directory(name):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "work"]
    assert list(work.iterdir()) == []


def test_a_path_below_a_file_or_through_a_symlink_is_refused_up_front(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FfemError, match="file/deeper/out: cannot be created, .*file is a file"):
        atomic.check_owned(tmp_path / "file" / "deeper" / "out")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(FfemError, match="link: is a symlink"):
        atomic.check_owned(tmp_path / "link")
