"""``ffem train`` under faults: kill -9 and resume, a changed or corrupted pack, bad settings,
unwritable runs. Every file is written by the test (synthetic pack, 64-pixel faces, tiny backbone)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import keras
import numpy as np
import pytest
from fault_fixtures import read_only_folder
from train_fixtures import cli_flags, make_pack, write_pair_list
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data import pack_check
from ffem_cli.data.packdir import PackDir
from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256
from ffem_cli.train import checkpoint
from ffem_cli.train import config as C
from ffem_cli.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
# 96 images, batch 16: 6 steps per epoch, 12 in all; checkpoints at steps 5, 6 (epoch end), 10, 12
ARGS = cli_flags(
    backbone="tiny", embedding_size=32, batch_size=16, lr=0.003, epochs=2, checkpoint_every=5, augment="off"
)


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    return make_pack(tmp_path_factory.mktemp("reliability"))


@pytest.fixture(scope="module")
def reference(pack_dir, tmp_path_factory):
    """The uninterrupted run of ``ARGS``: its directory."""
    run = tmp_path_factory.mktemp("reference") / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(pack_dir), "--run", str(run), *ARGS])
    assert result.exit_code == 0, result.output
    return run


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(run: Path, reference: Path) -> None:
    """Same embedder weights and the same logged loss/accuracy per epoch, each epoch logged once."""
    mine, theirs = metrics(run), metrics(reference)
    assert [r["epoch"] for r in mine] == [r["epoch"] for r in theirs] == [1, 2]
    for a, b in zip(mine, theirs, strict=True):
        assert a["step"] == b["step"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-6)
    left = keras.models.load_model(run / "embedder.keras").get_weights()
    right = keras.models.load_model(reference / "embedder.keras").get_weights()
    for x, y in zip(left, right, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def run_ffem(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``ffem ARGS`` in a fresh Python process."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from ffem_cli.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def test_kill_just_before_the_final_embedder_save_resumes_to_the_uninterrupted_run(pack_dir, reference, tmp_path):
    run = tmp_path / "run"
    killed = run_ffem(
        "train", "--data", str(pack_dir), "--run", str(run), *ARGS, env={"FFEM_KILL_AT": "train:before-embedder-save:2"}
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [r["epoch"] for r in metrics(run)] == [1, 2]  # epoch 2 was logged, its embedder not written
    result = CliRunner().invoke(app, ["train", "--data", str(pack_dir), "--run", str(run), *ARGS, "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 10 (epoch 2, step 4 of 6)" in result.output
    assert_same_run(run, reference)


def test_fall_back_to_an_older_checkpoint_logs_each_epoch_once_with_the_same_metrics(
    pack_dir, reference, tmp_path, capsys
):
    run = tmp_path / "run"
    config = C.resolve(
        {},
        {
            "data": str(pack_dir),
            "backbone": "tiny",
            "embedding_size": 32,
            "batch_size": 16,
            "lr": 0.003,
            "epochs": 2,
            "checkpoint_every": 5,
            "augment": "off",
        },
    )
    train(config, run, halt_at_step=8, show_progress=False)
    kept = checkpoint.list_checkpoints(run / "checkpoints")
    assert [p.name for p in kept] == ["ckpt-000000005.npz", "ckpt-000000006.npz"]
    assert [r["epoch"] for r in metrics(run)] == [1]
    kept[-1].write_bytes(b"cut short")  # the epoch-end checkpoint is lost: epoch 1 is trained again from step 5
    train(config, run, show_progress=False)
    assert "ckpt-000000006.npz is unreadable" in "".join(capsys.readouterr().err.split("\n"))
    assert_same_run(run, reference)


def test_a_finished_run_resumed_rewrites_its_embedder_from_the_final_checkpoint(pack_dir, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    stale = keras.models.load_model(run / "embedder.keras")
    stale.set_weights([w * 0 + 0.5 for w in stale.get_weights()])
    stale.save(run / "embedder.keras")  # e.g. an older epoch's, as the issue found
    result = CliRunner().invoke(app, ["train", "--data", str(pack_dir), "--run", str(run), *ARGS, "--resume"])
    assert result.exit_code == 0, result.output
    assert_same_run(run, reference)


def test_resume_refuses_another_pack_and_keeps_the_recorded_fingerprint(pack_dir, tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(pack_dir, pack)
    run = tmp_path / "run"
    started = ["train", "--data", str(pack), "--run", str(run), *ARGS, "--epochs", "1"]
    assert CliRunner().invoke(app, started).exit_code == 0
    recorded = (run / "run.toml").read_text()
    shutil.rmtree(pack)
    make_pack(tmp_path / "other", identities=9, seed=5)
    shutil.copytree(tmp_path / "other" / "pack", pack)  # re-packed in place with other identities
    for args in ([*started[:-2], "--epochs", "2", "--resume"], [*started[:-2], "--epochs", "1"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1
        assert result.output.startswith(f"error: {pack}: is not the pack {run} started on (its manifest's sha256")
        assert len(result.output.strip().splitlines()) == 1
    assert (run / "run.toml").read_text() == recorded


def corrupt(pack: Path, how: str) -> None:
    """Damage a copy of a pack the way ``how`` says."""
    manifest = PackDir(pack).read_manifest_json()
    shard = pack / manifest["shards"][1]["file"]
    with np.load(PackDir(pack).index_path) as archive:
        index = {key: archive[key] for key in archive.files}
    first = int(index["offset"][index["shard"] == 1][0])

    def write_index():
        with open(pack / "index.npz", "wb") as handle:
            np.savez(handle, **index)
        manifest["index"]["sha256"] = file_sha256(PackDir(pack).index_path)
        PackDir(pack).manifest_path.write_text(json.dumps(manifest))

    if how == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif how == "overwritten shard":
        shard.write_bytes(bytes(shard.stat().st_size))
    elif how == "flipped byte":
        data = bytearray(shard.read_bytes())
        data[first + 40] ^= 0x01
        shard.write_bytes(bytes(data))
    elif how == "garbage index":
        PackDir(pack).index_path.write_bytes(b"PK\x03\x04 not a zip at all" * 10)
    elif how == "labels shifted in one shard":
        index["label"][index["shard"] == 1] = (index["label"][index["shard"] == 1] + 1) % 8
        write_index()
    elif how == "out-of-range label":
        index["label"][3] = 99
        write_index()
    elif how.startswith("manifest "):
        key, value = how.split()[1], json.loads(how.split(maxsplit=2)[2])
        manifest[key] = value
        PackDir(pack).manifest_path.write_text(json.dumps(manifest))


CORRUPTIONS = {
    "truncated shard": r"faces-00001-of-00002\.tfrecord: corrupted pack: \d+ bytes, the index implies \d+ "
    r"\(truncated or overwritten\)",
    "overwritten shard": r"faces-00001-of-00002\.tfrecord record at byte 0: corrupted pack: bad length or CRC32C",
    "flipped byte": r"faces-00001-of-00002\.tfrecord record at byte 0: corrupted pack: bad length or CRC32C",
    "garbage index": r"index\.npz: corrupted pack: its sha256 differs from the manifest's",
    "labels shifted in one shard": r"faces-00001-of-00002\.tfrecord record at byte 0: corrupted pack: label \d, "
    r"the index says \d",
    "out-of-range label": r"index\.npz: corrupted pack: label 99 is outside 0\.\.7 \(num_classes\)",
    'manifest image_size "abc"': r"manifest\.json: malformed manifest \(image_size must be an integer >= 1, got 'abc'\)",
    "manifest shards 5": r"manifest\.json: malformed manifest \(shards must be a non-empty list\)",
    'manifest num_classes "8"': r"manifest\.json: malformed manifest \(num_classes must be an integer",
    'manifest shards [{"file": "../../etc/passwd", "count": 96}]': r"shard file must be a plain file name in the pack",
}


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_corrupted_pack_is_one_error_line_before_training(pack_dir, tmp_path, how):
    pack = tmp_path / "pack"
    shutil.copytree(pack_dir, pack)
    corrupt(pack, how)
    with pytest.raises(FfemError, match=CORRUPTIONS[how]):
        pack_check.check_pack(pack)
    if how in ("truncated shard", 'manifest image_size "abc"', "garbage index"):  # the same through the CLI
        result = CliRunner().invoke(app, ["train", "--data", str(pack), "--run", str(tmp_path / "run"), *ARGS])
        assert result.exit_code == 1 and result.output.startswith("error: ")
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "run").exists()


def test_garbage_index_is_one_line_for_every_pack_reader(pack_dir, tmp_path):
    from ffem_cli.data.pipeline import eval_dataset

    pack = tmp_path / "pack"
    shutil.copytree(pack_dir, pack)
    corrupt(pack, "garbage index")
    with pytest.raises(FfemError, match=r"index\.npz: unreadable pack index \(.*\); re-run ffem pack$"):
        eval_dataset(pack, 16)


def test_only_verify_reads_every_record_and_a_bad_record_in_training_is_one_line(pack_dir, tmp_path, monkeypatch):
    pack = tmp_path / "pack"
    shutil.copytree(pack_dir, pack)
    manifest = PackDir(pack).read_manifest_json()
    with np.load(PackDir(pack).index_path) as archive:
        offset, length = int(archive["offset"][40]), int(archive["length"][40])
        assert archive["shard"][40] == 0 and archive["shard"][39] == 0 and archive["shard"][41] == 0
    shard = pack / manifest["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    jpeg = data.index(b"\xff\xd8\xff", offset, offset + length)
    data[jpeg : jpeg + 3] = b"XYZ"  # the record's JPEG no longer decodes; its CRC no longer matches
    shard.write_bytes(bytes(data))
    monkeypatch.setattr(pack_check, "SAMPLE", 0)  # only each shard's first and last record are read back
    pack_check.check_pack(pack)
    with pytest.raises(FfemError, match=r"faces-00000-of-00002\.tfrecord: corrupted pack: its sha256 differs"):
        pack_check.check_pack(pack, full=True)
    result = CliRunner().invoke(app, ["train", "--data", str(pack), "--run", str(tmp_path / "v"), *ARGS, "--verify"])
    assert result.exit_code == 1 and "its sha256 differs from the manifest's" in result.output
    result = CliRunner().invoke(app, ["train", "--data", str(pack), "--run", str(tmp_path / "run"), *ARGS])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]  # after the progress bars
    assert last == (
        f"error: {pack}: a record of the pack cannot be read (Unknown image file format. One of JPEG, "
        "JPEG XL, PNG, GIF, BMP, WebP required.); run ffem train --verify to check every shard, or "
        "re-run ffem pack"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss-option", "alpha=abc"], "loss 'l2-softmax' option 'alpha' must be a finite number, got 'abc'"),
        (
            ["--loss", "arcface", "--loss-option", "margin=[1,2]"],
            "loss 'arcface' option 'margin' must be a finite number, got [1, 2]",
        ),
        (["--loss", "arcface", "--loss-option", "easy_margin=1"], "option 'easy_margin' must be true or false, got 1"),
        (["--loss", "groupface", "--loss-option", "groups=2.5"], "option 'groups' must be an integer, got 2.5"),
        (["--config", "decay.toml"], "training setting 'decay_epochs' must be list[int], got ['a', 'b']"),
        (["--config", "options.toml"], "loss 'arcface' option 'margin' must be a finite number, got 'x'"),
        (["--val-pairs", "missing.txt"], "missing.txt"),
        (["--init-from", "no-such-run"], "no-such-run: not a run directory (no run.toml)"),
        (["--val-pairs", "latin1.txt"], "latin1.txt: not a UTF-8 text file (invalid continuation byte)"),
        (
            ["--init-from", "typo-run"],
            "typo-run/run.toml: [model] backbone/pooling must be names and embedding_size a positive integer",
        ),
    ],
)
def test_bad_settings_are_one_line_and_create_no_run(pack_dir, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    Path("decay.toml").write_text('[train]\nschedule = "step"\ndecay_epochs = ["a", "b"]\n')
    Path("options.toml").write_text('[train]\nloss = "arcface"\nloss_options = {margin = "x"}\n')
    Path("latin1.txt").write_bytes(b"1,caf\xe9/1.jpg,caf\xe9/2.jpg\n")
    Path("typo-run").mkdir()
    Path("typo-run/run.toml").write_text('[model]\nbackbone = "tiny"\nembedding_size = "abc"\n')
    result = CliRunner().invoke(app, ["train", "--data", str(pack_dir), "--run", "run", *ARGS, *args])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not Path("run").exists()  # so the corrected command is not refused as "a different configuration"


def test_val_pairs_checked_before_the_run_exists_then_the_fixed_command_runs(pack_dir, tmp_path):
    pairs = write_pair_list(pack_dir, tmp_path / "pairs.txt")
    base = ["train", "--data", str(pack_dir), "--run", str(tmp_path / "run"), *ARGS, "--epochs", "1"]
    result = CliRunner().invoke(app, [*base, "--val-pairs", str(tmp_path / "pairs.tx")])
    assert result.exit_code == 1 and not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, [*base, "--val-pairs", str(pairs)])
    assert result.exit_code == 0, result.output
    assert any(key.startswith("val") and key.endswith("accuracy") for key in metrics(tmp_path / "run")[0])


def test_run_that_is_a_file_is_one_line(pack_dir, tmp_path):
    (tmp_path / "run").write_text("notes")
    result = CliRunner().invoke(app, ["train", "--data", str(pack_dir), "--run", str(tmp_path / "run"), *ARGS])
    assert result.exit_code == 1 and result.output.strip() == f"error: {tmp_path / 'run'}: exists and is not a folder"
    assert (tmp_path / "run").read_text() == "notes"


def test_read_only_folder_is_one_line_before_any_work(pack_dir, tmp_path):
    with read_only_folder(tmp_path) as locked:
        result = CliRunner().invoke(app, ["train", "--data", str(pack_dir), "--run", str(locked / "run"), *ARGS])
        assert result.exit_code == 1
        assert result.output == (
            f"error: {locked / 'run'}: cannot be created, {locked} is not writable (permission denied)\n"
        )
        assert not (locked / "run").exists()


def test_a_finished_run_records_the_pack_fingerprint(pack_dir, reference):
    saved = tomllib.loads((reference / "run.toml").read_text())
    assert saved["data"]["manifest_sha256"] == file_sha256(PackDir(pack_dir).manifest_path)
