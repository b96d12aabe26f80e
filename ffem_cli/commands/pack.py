"""`ffem pack`: image_list.json → TFRecord shards."""

from ffem_cli.errors import FfemError


def pack() -> None:
    """image_list.json → TFRecord shards (not built yet)."""
    raise FfemError("ffem pack is not built yet", exit_code=2)
