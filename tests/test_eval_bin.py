"""``ffem eval bin``: insightface .bin sets read safely, scored as insightface's verification.py does."""

from __future__ import annotations

import json
import pickle
import pickletools

import numpy as np
import pytest
from eval_fixtures import make_run, write_bin
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.errors import FfemError
from ffem_cli.evaluate.binset import insightface_kfold, kfold_splits, read_bin, restricted_loads


def reference_insightface_accuracy(embeddings1, embeddings2, issame, folds=10):
    """insightface recognition/eval/verification.py calculate_roc, accuracy part, written out loop by loop."""
    thresholds = np.arange(0, 4, 0.01)
    dist = np.sum(np.square(np.subtract(embeddings1, embeddings2)), 1)
    indices = np.arange(len(issame))
    accuracy = np.zeros(folds)
    for fold_idx, test_set in enumerate(np.array_split(indices, folds)):  # == KFold(folds, shuffle=False)
        train_set = np.setdiff1d(indices, test_set)
        acc_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            predict = np.less(dist[train_set], threshold)
            tp = np.sum(np.logical_and(predict, issame[train_set]))
            tn = np.sum(np.logical_and(np.logical_not(predict), np.logical_not(issame[train_set])))
            acc_train[threshold_idx] = float(tp + tn) / dist[train_set].size
        best = np.argmax(acc_train)
        predict = np.less(dist[test_set], thresholds[best])
        tp = np.sum(np.logical_and(predict, issame[test_set]))
        tn = np.sum(np.logical_and(np.logical_not(predict), np.logical_not(issame[test_set])))
        accuracy[fold_idx] = float(tp + tn) / dist[test_set].size
    return accuracy


def test_kfold_accuracy_matches_the_insightface_loop():
    rng = np.random.default_rng(1)
    pairs = 437  # not a multiple of 10: uneven folds
    issame = rng.random(pairs) < 0.5
    a = rng.normal(size=(pairs, 8))
    b = np.where(issame[:, None], a + rng.normal(0, 0.8, (pairs, 8)), rng.normal(size=(pairs, 8)))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    accuracies, thresholds = insightface_kfold(a, b, issame)
    np.testing.assert_array_equal(accuracies, reference_insightface_accuracy(a, b, issame))
    assert 0.6 < accuracies.mean() < 1.0 and thresholds.shape == (10,)


def test_folds_are_scikit_learns_kfold():
    model_selection = pytest.importorskip("sklearn.model_selection")
    for count in (20, 437, 6000):
        expected = [test for _, test in model_selection.KFold(10, shuffle=False).split(np.arange(count))]
        for mine, theirs in zip(kfold_splits(count), expected, strict=True):
            np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("protocol", range(6))
def test_plain_bins_load_in_every_pickle_protocol(protocol):
    flags = np.array([True, False, True])
    images, issame = restricted_loads(pickle.dumps(([b"\xff\xd8a", b""], flags), protocol=protocol))
    assert images == [b"\xff\xd8a", b""]
    assert issame.dtype == np.bool_ and issame.tolist() == [True, False, True]
    assert restricted_loads(pickle.dumps(([b"x"], [True, False]), protocol=protocol)) == ([b"x"], [True, False])


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo owned > owned.txt",))


def _refusal(path) -> str:
    with pytest.raises(FfemError) as caught:
        read_bin(path)
    message = str(caught.value)
    assert "\n" not in message and "refused" in message
    return message


def test_forbidden_global_and_opcode_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps(([b"a", Exploit()], [True]), protocol=2))
    assert "forbidden global posix.system" in _refusal(evil) or "forbidden global nt.system" in _refusal(evil)
    assert not (tmp_path / "owned.txt").exists()
    # a dict (EMPTY_DICT / SETITEM) anywhere in the stream: refused by the opcode check, before loading
    dicts = tmp_path / "dict.bin"
    dicts.write_bytes(pickle.dumps(([b"a", b"b"], [True], {"x": 1}), protocol=4))
    assert any(op.name == "EMPTY_DICT" for op, _, _ in pickletools.genops(dicts.read_bytes()))
    assert "forbidden opcode EMPTY_DICT" in _refusal(dicts)
    # a NumPy array of another dtype (object arrays could hold anything)
    objects = tmp_path / "objects.bin"
    objects.write_bytes(pickle.dumps(([b"a", b"b"], np.array([1], dtype=object)), protocol=2))
    assert "array dtype" in _refusal(objects)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(pickle.dumps(([b"a", b"b"], [True]))[:-5])
    _refusal(truncated)


def test_eval_bin_gives_one_table_for_several_files(tmp_path):
    run = make_run(tmp_path)
    write_bin(tmp_path / "lfw.bin", 20, seed=1, as_array=False)
    write_bin(tmp_path / "cfp_fp.bin", 30, seed=2, as_array=True)
    result = CliRunner().invoke(
        app, ["eval", "bin", str(tmp_path / "lfw.bin"), str(tmp_path / "cfp_fp.bin"), "--run", str(run)]
    )
    assert result.exit_code == 0, result.output
    assert "lfw" in result.output and "cfp_fp" in result.output
    out_dir = run / "eval" / "bin"
    report = json.loads((out_dir / "report.json").read_text())
    assert set(report["sets"]) == {"lfw", "cfp_fp"}
    for figures in report["sets"].values():
        assert 0 <= figures["accuracy"] <= 1 and 0 <= figures["accuracy_flip"] <= 1
        assert 0 <= figures["eer"] <= 1 and 0 <= figures["auc"] <= 1
        assert set(figures["tar_at_far"]) == {"0.1"}  # 10-15 imposter pairs resolve FAR 0.1 only
    assert report["sets"]["cfp_fp"]["pairs"] == 30
    assert (out_dir / "roc.png").stat().st_size > 0 and (out_dir / "bins.csv").is_file()


def test_eval_bin_refuses_an_exploit_with_one_line(tmp_path):
    run = make_run(tmp_path)
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps(([b"a", Exploit()], [True]), protocol=4))
    result = CliRunner().invoke(app, ["eval", "bin", str(evil), "--run", str(run)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "forbidden global" in lines[0]
    assert not (run / "eval" / "bin").exists()
