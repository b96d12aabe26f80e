"""`ffem eval rfw|lfw|pairs|folder`: evaluation protocols."""

from ffem_cli.errors import FfemError


def rfw() -> None:
    """RFW per-race Recall@1 and verification (not built yet)."""
    raise FfemError("ffem eval rfw is not built yet", exit_code=2)


def lfw() -> None:
    """LFW verification (not built yet)."""
    raise FfemError("ffem eval lfw is not built yet", exit_code=2)


def pairs() -> None:
    """Any pair list (not built yet)."""
    raise FfemError("ffem eval pairs is not built yet", exit_code=2)


def folder() -> None:
    """Retrieval on a labelled folder (not built yet)."""
    raise FfemError("ffem eval folder is not built yet", exit_code=2)


COMMANDS = [rfw, lfw, pairs, folder]
