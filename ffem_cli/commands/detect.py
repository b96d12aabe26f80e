"""`ffem detect`: ROOT folder → image_list.json (MTCNN)."""

from ffem_cli.errors import FfemError


def detect() -> None:
    """ROOT folder → image_list.json (MTCNN) (not built yet)."""
    raise FfemError("ffem detect is not built yet", exit_code=2)
