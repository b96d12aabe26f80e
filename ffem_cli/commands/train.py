"""`ffem train`: train a classifier or metric stage."""

from ffem_cli.errors import FfemError


def train() -> None:
    """train a classifier or metric stage (not built yet)."""
    raise FfemError("ffem train is not built yet", exit_code=2)
