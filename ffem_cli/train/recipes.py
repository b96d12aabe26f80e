"""Recipes: a seed project's training settings under one name (``ffem train --recipe NAME``).

A recipe is any ``NAME.toml`` file in ``ffem_cli/train/recipes/`` (shipped as
package data). It has the schema of a ``--config`` file — a ``[train]``
table of ``TrainConfig`` settings — plus, optionally, ``[train.classifier]``
and ``[train.metric]`` tables for what only one stage sets (a seed's two
steps under one name), and a ``[recipe]`` table with ``source`` (where the
values come from) and ``summary`` (what differs and why). In
``config.resolve`` a recipe is one layer: above the stage defaults, below
``--config`` and the flags; the run records it as ``recipe = NAME``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ffem_cli.errors import FfemError

RECIPE_DIR = Path(__file__).with_name("recipes")


def recipe_names() -> list[str]:
    """The names of the shipped recipes, sorted."""
    return sorted(path.stem for path in RECIPE_DIR.glob("*.toml"))


def recipe_path(name: str) -> Path:
    """The file of recipe ``name``; ``FfemError`` naming the known ones when there is none."""
    path = RECIPE_DIR / f"{name}.toml"
    if "/" in name or "\\" in name or not path.is_file():
        raise FfemError(f"unknown recipe {name!r}; choose one of: {', '.join(recipe_names())}")
    return path


def read_recipe(name: str, stage: str | None = None) -> dict[str, Any]:
    """The ``[train]`` values of recipe ``name`` for ``stage`` (its own ``stage``, else
    classifier), with that stage's table over the shared values; checked against
    ``TrainConfig``."""
    from ffem_cli.train.config import STAGES, check_keys

    path = recipe_path(name)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("train", {})
    except tomllib.TOMLDecodeError as exc:
        raise FfemError(f"{path}: malformed TOML ({exc})") from exc
    per_stage = {key: table.pop(key) for key in STAGES if isinstance(table.get(key), dict)}
    values = {**table, **per_stage.get(stage or table.get("stage", "classifier"), {})}
    check_keys(values, str(path))
    if "recipe" in values:
        raise FfemError(f"{path}: a recipe must not name another recipe")
    return values


def recipe_info(name: str) -> dict[str, str]:
    """The ``[recipe]`` table of recipe ``name``: ``source`` and ``summary`` (may be empty)."""
    document = tomllib.loads(recipe_path(name).read_text(encoding="utf-8"))
    info = document.get("recipe", {})
    return {"source": str(info.get("source", "")), "summary": str(info.get("summary", ""))}
