"""`ffem embed`, `ffem search`, `ffem map`: using a trained model."""

from ffem_cli.errors import FfemError


def embed() -> None:
    """Embed a folder of faces (not built yet)."""
    raise FfemError("ffem embed is not built yet", exit_code=2)


def search() -> None:
    """Find the most similar faces in a gallery (not built yet)."""
    raise FfemError("ffem search is not built yet", exit_code=2)


def map_command() -> None:
    """Draw a 2-D map of a gallery (not built yet)."""
    raise FfemError("ffem map is not built yet", exit_code=2)
