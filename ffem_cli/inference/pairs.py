"""Pairs of a labelled set: every genuine pair, a seeded sample of impostor pairs, identity-disjoint folds.

Indices refer to positions in a ``labels`` array (one label per image).
``make_pair_list`` builds a verification list the way LFW's View 2 is built:
identities are split into folds (no identity in two folds) and each fold
draws its own genuine and impostor pairs from its identities only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffem_cli.errors import FfemError


def genuine_pairs(labels) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)``, ``i < j``, of images with the same label: int64 ``(first, second)``."""
    labels = np.asarray(labels)
    firsts, seconds = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if members.size > 1:
            a, b = np.triu_indices(members.size, k=1)
            firsts.append(members[a])
            seconds.append(members[b])
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)


def impostor_pair_count(labels) -> int:
    """How many pairs ``i < j`` have different labels."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1].astype(np.int64)
    n = int(counts.sum())
    return (n * n - int((counts * counts).sum())) // 2


def sample_impostor_pairs(labels, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``min(count, all)`` distinct pairs ``(i, j)``, ``i < j``, of different labels, drawn uniformly with ``rng``."""
    labels = np.asarray(labels)
    n = labels.size
    total = impostor_pair_count(labels)
    if total <= count:
        later = [np.flatnonzero(labels[i + 1 :] != labels[i]) + i + 1 for i in range(n)]
        first = np.repeat(np.arange(n, dtype=np.int64), [len(js) for js in later])
        return first, np.concatenate(later).astype(np.int64)
    keys = np.zeros(0, np.int64)
    while keys.size < count:
        draw = int((count - keys.size) * 1.2) + 16
        i, j = rng.integers(0, n, draw), rng.integers(0, n, draw)
        ok = labels[i] != labels[j]
        low, high = np.minimum(i, j)[ok], np.maximum(i, j)[ok]
        keys = np.unique(np.concatenate([keys, low.astype(np.int64) * n + high]))
    keys = rng.permutation(keys)[:count]
    keys.sort()
    return keys // n, keys % n


@dataclass(frozen=True)
class PairDraw:
    """A verification list: ``first``/``second`` image indices, ``same`` (bool) and ``fold`` per pair."""

    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    fold: np.ndarray


def split_identities(labels, folds: int, rng: np.random.Generator) -> dict[int, int]:
    """``{label: fold}``: shuffled identities, each given to the fold with the fewest genuine pairs so far."""
    names, counts = np.unique(np.asarray(labels), return_counts=True)
    order = rng.permutation(names.size)
    order = order[np.argsort(-(counts[order] * (counts[order] - 1)), kind="stable")]
    capacity = np.zeros(folds, dtype=np.int64)
    members = np.zeros(folds, dtype=np.int64)
    fold_of = {}
    for index in order:
        target = int(np.lexsort((members, capacity))[0])
        fold_of[int(names[index])] = target
        capacity[target] += counts[index] * (counts[index] - 1) // 2
        members[target] += 1
    return fold_of


def make_pair_list(labels, pairs: int, folds: int = 10, seed: int = 0) -> PairDraw:
    """``pairs`` genuine and ``pairs`` impostor pairs in ``folds`` identity-disjoint folds, seeded.

    Fold ``f`` gets ``pairs // folds`` (+1 for the first ``pairs % folds``
    folds) of each kind, drawn without repetition from its own identities.
    ``FfemError`` says why when a fold cannot give that many.
    """
    labels = np.asarray(labels)
    identities = np.unique(labels).size
    if pairs < 1 or folds < 1:
        raise FfemError("--pairs and --folds must be at least 1")
    if identities < 2 * folds:
        raise FfemError(f"{identities} identities cannot make {folds} identity-disjoint folds with impostor pairs (need >= {2 * folds})")
    rng = np.random.default_rng(seed)
    fold_of = split_identities(labels, folds, rng)
    image_fold = np.array([fold_of[int(label)] for label in labels])
    parts = []
    for fold in range(folds):
        wanted = pairs // folds + (fold < pairs % folds)
        members = np.flatnonzero(image_fold == fold)
        sub = labels[members]
        g1, g2 = genuine_pairs(sub)
        if g1.size < wanted:
            available = genuine_pairs(labels)[0].size
            raise FfemError(
                f"cannot make {pairs} genuine pairs in {folds} identity-disjoint folds: fold {fold + 1} can give "
                f"{g1.size}, needs {wanted} (the whole set has {available} genuine pairs; ask for fewer with --pairs)"
            )
        if impostor_pair_count(sub) < wanted:
            raise FfemError(f"cannot make {pairs} impostor pairs: fold {fold + 1} has only {impostor_pair_count(sub)}")
        pick = rng.choice(g1.size, wanted, replace=False)
        i1, i2 = sample_impostor_pairs(sub, wanted, rng)
        parts.append((members[g1[pick]], members[g2[pick]], np.ones(wanted, bool), fold))
        parts.append((members[i1], members[i2], np.zeros(wanted, bool), fold))
    return PairDraw(
        first=np.concatenate([p[0] for p in parts]),
        second=np.concatenate([p[1] for p in parts]),
        same=np.concatenate([p[2] for p in parts]),
        fold=np.concatenate([np.full(p[0].size, p[3]) for p in parts]),
    )


FORMATS = ("ee488b", "lfw")
_LFW_NAME = re.compile(r"^(?P<name>[^/\s]+)/(?P=name)_(?P<number>\d+)\.jpg$")


def format_pair_list(draw: PairDraw, keys: list[str], fmt: str) -> str:
    """The list as text: ``label,path1,path2`` lines (``ee488b``) or LFW's ``pairs.txt`` (``lfw``).

    ``lfw`` needs equal folds and images named ``<name>/<name>_<number>.jpg``
    (LFW's layout); ``FfemError`` names the first image that is not.
    """
    if fmt == "ee488b":
        return "".join(f"{int(s)},{keys[a]},{keys[b]}\n" for a, b, s in zip(draw.first, draw.second, draw.same, strict=True))
    if fmt != "lfw":
        raise FfemError(f"unknown --format {fmt!r} (choose {' or '.join(FORMATS)})")
    folds, per_fold = np.unique(draw.fold, return_counts=True)
    if np.unique(per_fold).size != 1:
        raise FfemError(f"--format lfw needs equal folds: make --pairs a multiple of --folds ({folds.size})")
    lines = [f"{folds.size}\t{per_fold[0] // 2}"]
    for a, b, same in zip(draw.first, draw.second, draw.same, strict=True):
        first, second = _lfw_parts(keys[a]), _lfw_parts(keys[b])
        lines.append(f"{first[0]}\t{first[1]}\t{second[1]}" if same else f"{first[0]}\t{first[1]}\t{second[0]}\t{second[1]}")
    return "\n".join(lines) + "\n"


def _lfw_parts(key: str) -> tuple[str, int]:
    match = _LFW_NAME.match(key)
    if match is None:
        raise FfemError(f"--format lfw needs images named <name>/<name>_<number>.jpg (LFW's layout); {key!r} is not")
    return match["name"], int(match["number"])


def labelled_keys(source: Path) -> tuple[list[str], np.ndarray]:
    """``(image keys, labels)`` of a labelled folder (relative paths) or a pack (its records' image-list keys)."""
    source = Path(source)
    if (source / "manifest.json").is_file():
        return _pack_keys(source)
    from ffem_cli.images import scan_identity_folder

    folder = scan_identity_folder(source)
    return folder.paths, np.asarray(folder.labels, np.int64)


def _pack_keys(pack_dir: Path) -> tuple[list[str], np.ndarray]:
    """Paths and labels of every record of a pack, without decoding the faces."""
    import tensorflow as tf

    from ffem_cli.data.pipeline import read_manifest

    manifest = read_manifest(pack_dir)
    files = [str(Path(pack_dir) / shard["file"]) for shard in manifest["shards"]]
    features = {"image/path": tf.io.FixedLenFeature([], tf.string), "image/label": tf.io.FixedLenFeature([], tf.int64)}
    keys, labels = [], []
    for batch in tf.data.TFRecordDataset(files).batch(4096).map(lambda r: tf.io.parse_example(r, features)):
        keys.extend(p.decode() for p in batch["image/path"].numpy().tolist())
        labels.append(batch["image/label"].numpy())
    if not keys:
        raise FfemError(f"{pack_dir}: the pack holds no faces")
    return keys, np.concatenate(labels).astype(np.int64)
