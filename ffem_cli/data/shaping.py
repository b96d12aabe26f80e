"""Shaping: from the tables of one or more sources to the faces and labels of one pack.

It never knows the formats: it sees ``SourceTable`` arrays only. In order:

1. label gaps in a source are an error unless ``relabel`` (the labels are
   compacted below either way, and old → new is recorded);
2. the sources are merged into one label space: identities are disjoint,
   named ``<source name>/<identity>`` when there are several sources, or with
   ``same_identities`` merged by name;
3. ``groups``: keep the faces of these groups;
4. ``min_images``: keep identities with at least that many faces;
5. ``identities``: the first N identities by (source, label), or a random N
   when ``seed`` is given;
6. ``max_images_per_identity``: a seeded random choice of M faces each;
7. new labels ``0..K-1`` in identity order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ffem_cli.data.image_list import label_gap_problem
from ffem_cli.data.sources import SourceTable
from ffem_cli.errors import FfemError


@dataclass(frozen=True)
class Shaping:
    """The shaping options of ``ffem pack`` (recorded in the manifest)."""

    identities: int | None = None
    seed: int | None = None
    groups: tuple[str, ...] = ()
    min_images: int = 1
    max_images_per_identity: int | None = None
    same_identities: bool = False
    relabel: bool = False


@dataclass
class ShapedSet:
    """The faces to pack: ``source`` (int32), ``refs`` (int64), ``labels`` (int64, ``0..K-1``) per face.

    ``names[k]`` and ``groups[k]`` (``None`` when ungrouped) describe label ``k``;
    ``origin[k]`` lists its ``[source index, source label]`` pairs. ``report``
    goes into the manifest.
    """

    source: np.ndarray
    refs: np.ndarray
    labels: np.ndarray
    names: list[str]
    groups: list[str | None]
    origin: list[list[list[int]]]
    report: dict


def _check_options(shaping: Shaping) -> None:
    if shaping.identities is not None and shaping.identities < 1:
        raise FfemError(f"--identities must be at least 1, got {shaping.identities}")
    if shaping.min_images < 1:
        raise FfemError(f"--min-images must be at least 1, got {shaping.min_images}")
    if shaping.max_images_per_identity is not None and shaping.max_images_per_identity < 1:
        raise FfemError(f"--max-images-per-identity must be at least 1, got {shaping.max_images_per_identity}")


def shape(tables: list[SourceTable], source_names: list[str], shaping: Shaping = Shaping()) -> ShapedSet:
    """Merge and shape ``tables`` (one per source, named ``source_names``); ``FfemError`` on bad options."""
    _check_options(shaping)
    for table, name in zip(tables, source_names, strict=True):
        if table.rows and not shaping.relabel:
            problem = label_gap_problem(table.labels)
            if problem:
                raise FfemError(f"{name}: {problem}")
    ident, names, origin, group_of = _merge(tables, source_names, shaping.same_identities)
    source = np.concatenate([np.full(t.rows, i, np.int32) for i, t in enumerate(tables)])
    refs = np.concatenate([t.refs for t in tables])
    row_groups = np.concatenate([_global_groups(t, group_of) for t in tables])
    group_names = list(group_of)
    report = {**asdict(shaping), "groups": list(shaping.groups), "images_in": len(refs), "identities_in": len(names)}
    keep = np.ones(len(refs), bool)
    if shaping.groups:
        unknown = [g for g in shaping.groups if g not in group_of]
        if unknown:
            have = ", ".join(group_names) if group_names else "none: the sources have no groups"
            raise FfemError(f"--groups: no group {unknown[0]!r} (groups: {have})")
        keep &= np.isin(row_groups, [group_of[g] for g in shaping.groups])
    counts = np.bincount(ident[keep], minlength=len(names))
    eligible = np.flatnonzero(counts >= shaping.min_images)
    if shaping.identities is not None:
        if shaping.identities > len(eligible):
            raise FfemError(
                f"--identities {shaping.identities}: only {len(eligible)} identities are left "
                "after --groups/--min-images"
            )
        if shaping.seed is None:
            eligible = eligible[: shaping.identities]
        else:
            rng = np.random.default_rng(shaping.seed)
            eligible = np.sort(rng.choice(eligible, shaping.identities, replace=False))
    keep &= np.isin(ident, eligible)
    if shaping.max_images_per_identity is not None:
        keep &= _cap_per_identity(ident, keep, shaping.max_images_per_identity, shaping.seed or 0)
    rows = np.flatnonzero(keep)
    if not len(rows):
        raise FfemError("no faces are left to pack after shaping")
    kept_ids, labels = np.unique(ident[rows], return_inverse=True)
    row_group_names = {int(ident[r]): int(row_groups[r]) for r in rows[np.unique(labels, return_index=True)[1]]}
    report.update(images=len(rows), identities=len(kept_ids))
    return ShapedSet(
        source=source[rows],
        refs=refs[rows],
        labels=labels.astype(np.int64),
        names=[names[i] for i in kept_ids],
        groups=[group_names[row_group_names[i]] if row_group_names[i] >= 0 else None for i in kept_ids],
        origin=[origin[i] for i in kept_ids],
        report=report,
    )


def _merge(
    tables: list[SourceTable], source_names: list[str], same_identities: bool
) -> tuple[np.ndarray, list[str], list[list[list[int]]], dict[str, int]]:
    """Global identity per row, identity names, origins, and the global group codes."""
    group_of: dict[str, int] = {}
    for table in tables:
        for group in table.group_names:
            group_of.setdefault(group, len(group_of))
    several = len(tables) > 1
    names: list[str] = []
    origin: list[list[list[int]]] = []
    by_name: dict[str, int] = {}
    idents = []
    for number, table in enumerate(tables):
        labels = np.unique(table.labels)
        mapping = np.zeros(int(labels[-1]) + 1 if len(labels) else 0, np.int64)
        for label in labels.tolist():
            name = table.name_of(label)
            if several and not same_identities:
                name = f"{source_names[number]}/{name}"
            if same_identities and name in by_name:
                identity = by_name[name]
                origin[identity].append([number, label])
            else:
                identity = by_name[name] = len(names)
                names.append(name)
                origin.append([[number, label]])
            mapping[label] = identity
        idents.append(mapping[table.labels])
    return np.concatenate(idents), names, origin, group_of


def _global_groups(table: SourceTable, group_of: dict[str, int]) -> np.ndarray:
    codes = np.array([group_of[g] for g in table.group_names] + [-1], np.int32)
    return codes[table.groups]  # -1 indexes the trailing -1


def _cap_per_identity(ident: np.ndarray, keep: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """A mask keeping at most ``cap`` random kept rows per identity (seeded)."""
    priority = np.random.default_rng(seed).random(len(ident))
    priority[~keep] = 2.0  # never chosen ahead of a kept row
    order = np.lexsort((priority, ident))
    sorted_ident = ident[order]
    starts = np.searchsorted(sorted_ident, sorted_ident, side="left")
    rank = np.arange(len(order)) - starts
    capped = np.zeros(len(ident), bool)
    capped[order] = rank < cap
    return capped
