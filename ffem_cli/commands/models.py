"""`ffem models`: the backbones, poolings and losses ffem knows."""

from ffem_cli.errors import FfemError


def models() -> None:
    """List backbones, poolings and losses (not built yet)."""
    raise FfemError("ffem models is not built yet", exit_code=2)
