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

from ffem_cli.data.packdir import PackDir
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
    """``{label: fold}``: identities shuffled, ordered by image count (largest first) and dealt to the folds
    back and forth (0, 1, …, F-1, F-1, …, 0, …), so folds get as many identities and about as many images."""
    names, counts = np.unique(np.asarray(labels), return_counts=True)
    order = rng.permutation(names.size)
    order = order[np.argsort(-counts[order], kind="stable")]
    position = np.arange(names.size)
    forward = (position // folds) % 2 == 0
    fold = np.where(forward, position % folds, folds - 1 - position % folds)
    return {int(names[index]): int(f) for index, f in zip(order, fold, strict=True)}


def _pairs_within(members: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` distinct pairs ``(count, 2)`` of ``members``, in random order."""
    n = members.size
    if n * (n - 1) // 2 <= 2 * count:
        a, b = np.triu_indices(n, k=1)
        chosen = rng.permutation(a.size)[:count]
        return np.stack([members[a[chosen]], members[b[chosen]]], axis=1)
    keys = np.zeros(0, np.int64)
    while keys.size < count:
        i, j = rng.integers(0, n, 2 * count), rng.integers(0, n, 2 * count)
        keep = i != j
        keys = np.unique(np.r_[keys, np.minimum(i, j)[keep] * n + np.maximum(i, j)[keep]])
    keys = rng.permutation(keys)[:count]
    return np.stack([members[keys // n], members[keys % n]], axis=1)


def _spread_genuine(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray | None:
    """``count`` genuine pairs ``(count, 2)`` spread over identities: one pair of each (shuffled) identity in turn,
    then a second of each, and so on; ``None`` when there are fewer than ``count``."""
    per_identity = [
        _pairs_within(np.flatnonzero(labels == label), count, rng) for label in rng.permutation(np.unique(labels))
    ]
    per_identity = [pairs for pairs in per_identity if len(pairs)]
    if sum(len(pairs) for pairs in per_identity) < count:
        return None
    depth = max(len(pairs) for pairs in per_identity)
    turns = [pairs[turn] for turn in range(depth) for pairs in per_identity if turn < len(pairs)]
    return np.asarray(turns[:count])


def _spread_impostors(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray | None:
    """``count`` distinct impostor pairs ``(count, 2)``: two different identities drawn uniformly, one image of each;
    ``None`` when there are fewer than ``count``."""
    if impostor_pair_count(labels) < count:
        return None
    names = np.unique(labels)
    members = [np.flatnonzero(labels == name) for name in names]
    n = labels.size
    keys = np.zeros(0, np.int64)
    while keys.size < count:
        draw = 2 * (count - keys.size) + 16
        a, b = rng.integers(0, names.size, draw), rng.integers(0, names.size, draw)
        keep = a != b
        i = np.array([members[x][rng.integers(len(members[x]))] for x in a[keep]], np.int64)
        j = np.array([members[x][rng.integers(len(members[x]))] for x in b[keep]], np.int64)
        fresh = np.minimum(i, j) * n + np.maximum(i, j)
        _, first_seen = np.unique(fresh, return_index=True)
        fresh = fresh[np.sort(first_seen)]
        keys = np.r_[keys, fresh[~np.isin(fresh, keys)]]
    keys = keys[:count]
    return np.stack([keys // n, keys % n], axis=1)


def make_pair_list(labels, pairs: int, folds: int = 10, seed: int = 0) -> PairDraw:
    """``pairs`` genuine and ``pairs`` impostor pairs in ``folds`` identity-disjoint folds, seeded.

    Identities are dealt so that folds hold as many people and about as many images; fold ``f``
    gets ``pairs // folds`` (+1 for the first ``pairs % folds`` folds) of
    each kind, without repetition, from its own identities: genuine pairs
    spread over its identities in turn, impostor pairs from two identities
    drawn uniformly (so a person with hundreds of photos does not fill the
    list). ``FfemError`` says which fold falls short when it cannot.
    """
    labels = np.asarray(labels)
    identities = np.unique(labels).size
    if pairs < 1 or folds < 1:
        raise FfemError("--pairs and --folds must be at least 1")
    if identities < 2 * folds:
        raise FfemError(
            f"{identities} identities cannot make {folds} identity-disjoint folds with impostor pairs (need >= {2 * folds})"
        )
    rng = np.random.default_rng(seed)
    fold_of = split_identities(labels, folds, rng)
    image_fold = np.array([fold_of[int(label)] for label in labels])
    parts = []
    for fold in range(folds):
        wanted = pairs // folds + (fold < pairs % folds)
        members = np.flatnonzero(image_fold == fold)
        sub = labels[members]
        genuine = _spread_genuine(sub, wanted, rng)
        if genuine is None:
            raise FfemError(
                f"cannot make {pairs} genuine pairs in {folds} identity-disjoint folds: fold {fold + 1} "
                f"({np.unique(sub).size} identities, {sub.size} images) has {genuine_pairs(sub)[0].size}, needs {wanted}; "
                "ask for fewer with --pairs or fewer --folds"
            )
        impostors = _spread_impostors(sub, wanted, rng)
        if impostors is None:
            raise FfemError(f"cannot make {pairs} impostor pairs: fold {fold + 1} has only {impostor_pair_count(sub)}")
        parts.append((members[genuine], np.ones(wanted, bool), fold))
        parts.append((members[impostors], np.zeros(wanted, bool), fold))
    return PairDraw(
        first=np.concatenate([p[0][:, 0] for p in parts]),
        second=np.concatenate([p[0][:, 1] for p in parts]),
        same=np.concatenate([p[1] for p in parts]),
        fold=np.concatenate([np.full(p[1].size, p[2]) for p in parts]),
    )


FORMATS = ("ee488b", "lfw")
_LFW_NAME = re.compile(r"^(?P<name>[^/\s]+)/(?P=name)_(?P<number>\d+)\.jpg$")


def format_pair_list(draw: PairDraw, keys: list[str], fmt: str) -> str:
    """The list as text: ``label,path1,path2`` lines (``ee488b``) or LFW's ``pairs.txt`` (``lfw``).

    ``lfw`` needs equal folds and images named ``<name>/<name>_<number>.jpg``
    (LFW's layout); ``FfemError`` names the first image that is not.
    """
    if fmt == "ee488b":
        return "".join(
            f"{int(s)},{keys[a]},{keys[b]}\n" for a, b, s in zip(draw.first, draw.second, draw.same, strict=True)
        )
    if fmt != "lfw":
        raise FfemError(f"unknown --format {fmt!r} (choose {' or '.join(FORMATS)})")
    folds, per_fold = np.unique(draw.fold, return_counts=True)
    if np.unique(per_fold).size != 1:
        raise FfemError(f"--format lfw needs equal folds: make --pairs a multiple of --folds ({folds.size})")
    lines = [f"{folds.size}\t{per_fold[0] // 2}"]
    for a, b, same in zip(draw.first, draw.second, draw.same, strict=True):
        first, second = _lfw_parts(keys[a]), _lfw_parts(keys[b])
        lines.append(
            f"{first[0]}\t{first[1]}\t{second[1]}" if same else f"{first[0]}\t{first[1]}\t{second[0]}\t{second[1]}"
        )
    return "\n".join(lines) + "\n"


def _lfw_parts(key: str) -> tuple[str, int]:
    match = _LFW_NAME.match(key)
    if match is None:
        raise FfemError(f"--format lfw needs images named <name>/<name>_<number>.jpg (LFW's layout); {key!r} is not")
    return match["name"], int(match["number"])


def labelled_keys(source: Path) -> tuple[list[str], np.ndarray]:
    """``(image keys, labels)`` of a labelled folder (relative paths) or a pack (its records' image-list keys)."""
    source = Path(source)
    if PackDir(source).is_finished:
        return _pack_keys(source)
    from ffem_cli.images import scan_identity_folder

    folder = scan_identity_folder(source)
    return folder.paths, np.asarray(folder.labels, np.int64)


def _pack_keys(pack_dir: Path) -> tuple[list[str], np.ndarray]:
    """Paths and labels of every record of a pack, without decoding the faces."""
    import tensorflow as tf

    files = [str(path) for path in PackDir(pack_dir).shard_paths]
    features = {"image/path": tf.io.FixedLenFeature([], tf.string), "image/label": tf.io.FixedLenFeature([], tf.int64)}
    keys, labels = [], []
    for batch in tf.data.TFRecordDataset(files).batch(4096).map(lambda r: tf.io.parse_example(r, features)):
        keys.extend(p.decode() for p in batch["image/path"].numpy().tolist())
        labels.append(batch["image/label"].numpy())
    if not keys:
        raise FfemError(f"{pack_dir}: the pack holds no faces")
    return keys, np.concatenate(labels).astype(np.int64)
