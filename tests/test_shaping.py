"""Shaping: subsets by identities, groups and counts, and merging sources into one label space."""

from __future__ import annotations

import numpy as np
import pytest
from face_sources import jpeg, write_recordio
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data.packdir import PackDir
from ffem_cli.data.shaping import Shaping, shape
from ffem_cli.data.sources import SourceTable
from ffem_cli.errors import FfemError


def table(labels, groups=None, group_names=(), names=None) -> SourceTable:
    labels = np.asarray(labels, np.int64)
    return SourceTable(
        refs=np.arange(len(labels), dtype=np.int64) + 100,
        labels=labels,
        groups=np.asarray(groups if groups is not None else [-1] * len(labels), np.int32),
        group_names=list(group_names),
        names=names or {},
    )


# identity 0: 1 image, 1: 3 images, 2: 2 images, 3: 5 images
LABELS = [0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3]


def test_without_options_everything_is_kept_in_order():
    shaped = shape([table(LABELS)], ["s"])
    assert shaped.labels.tolist() == LABELS and shaped.refs.tolist() == list(range(100, 111))
    assert shaped.names == ["0", "1", "2", "3"]
    assert shaped.report["images"] == 11 and shaped.report["identities"] == 4


def test_min_images_then_first_n_identities_by_label():
    shaped = shape([table(LABELS)], ["s"], Shaping(min_images=2, identities=2))
    assert shaped.names == ["1", "2"]
    assert shaped.labels.tolist() == [0, 0, 0, 1, 1]
    assert shaped.origin == [[[0, 1]], [[0, 2]]]


def test_random_identities_follow_the_seed():
    picks = {tuple(shape([table(LABELS)], ["s"], Shaping(identities=2, seed=s)).names) for s in range(12)}
    assert len(picks) > 1  # different seeds choose different identities
    again = shape([table(LABELS)], ["s"], Shaping(identities=2, seed=3)).names
    assert again == shape([table(LABELS)], ["s"], Shaping(identities=2, seed=3)).names


def test_max_images_per_identity_is_a_seeded_choice():
    shaped = shape([table(LABELS)], ["s"], Shaping(max_images_per_identity=2, seed=5))
    counts = np.bincount(shaped.labels)
    assert counts.tolist() == [1, 2, 2, 2]
    same = shape([table(LABELS)], ["s"], Shaping(max_images_per_identity=2, seed=5))
    assert shaped.refs.tolist() == same.refs.tolist()
    kept_of_3 = {
        tuple(shape([table(LABELS)], ["s"], Shaping(max_images_per_identity=2, seed=s)).refs[-2:]) for s in range(10)
    }
    assert len(kept_of_3) > 1


def test_groups_keep_only_those_faces():
    t = table([0, 0, 1, 2], groups=[0, 0, 1, 1], group_names=["African", "Asian"])
    shaped = shape([t], ["s"], Shaping(groups=("Asian",)))
    assert shaped.refs.tolist() == [102, 103] and shaped.groups == ["Asian", "Asian"]


def test_two_sources_are_disjoint_and_prefixed_or_merged_by_name():
    first = table([0, 0, 1], names={0: "ann", 1: "bob"})
    second = table([0, 1, 1], names={0: "bob", 1: "cid"})
    disjoint = shape([first, second], ["vgg", "ms1m"])
    assert disjoint.names == ["vgg/ann", "vgg/bob", "ms1m/bob", "ms1m/cid"]
    assert disjoint.labels.tolist() == [0, 0, 1, 2, 3, 3]
    merged = shape([first, second], ["vgg", "ms1m"], Shaping(same_identities=True))
    assert merged.names == ["ann", "bob", "cid"]
    assert merged.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert merged.origin[1] == [[0, 1], [1, 0]]


@pytest.mark.parametrize(
    "shaping, message",
    [
        (Shaping(identities=9), "--identities 9: only 4 identities are left after --groups/--min-images"),
        (Shaping(min_images=0), "--min-images must be at least 1, got 0"),
        (Shaping(max_images_per_identity=0), "--max-images-per-identity must be at least 1, got 0"),
        (Shaping(groups=("X",)), "--groups: no group 'X' (groups: none: the sources have no groups)"),
        (Shaping(min_images=6), "no faces are left to pack after shaping"),
    ],
)
def test_bad_shaping_is_one_line(shaping, message):
    with pytest.raises(FfemError) as caught:
        shape([table(LABELS)], ["s"], shaping)
    assert str(caught.value) == message


def test_label_gap_needs_relabel():
    with pytest.raises(FfemError, match="s: labels must be 0..N-1 without gaps: label 1 is missing"):
        shape([table([0, 2])], ["s"])
    assert shape([table([0, 2])], ["s"], Shaping(relabel=True)).labels.tolist() == [0, 1]


def test_pack_merges_two_recordio_sets_through_the_cli(tmp_path):
    faces = [(label, jpeg((112, 112), 7 * label + i)) for label in range(2) for i in range(2)]
    write_recordio(tmp_path / "ms1m", faces)
    write_recordio(tmp_path / "glint", faces[:2])
    result = CliRunner().invoke(
        app,
        [
            "pack",
            str(tmp_path / "ms1m"),
            str(tmp_path / "glint" / "train.rec"),
            "-o",
            str(tmp_path / "p"),
            "--shards",
            "1",
            "--max-images-per-identity",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = PackDir(tmp_path / "p").read_manifest_json()
    assert manifest["label_map"] == {"ms1m/0": 0, "ms1m/1": 1, "glint/0": 2}
    assert manifest["num_examples"] == 3
    assert [s["name"] for s in manifest["sources"]] == ["ms1m", "glint"]
    assert manifest["shaping"]["max_images_per_identity"] == 1
