"""`ffem gallery GALLERY`: list a gallery's identities and counts, or remove one identity."""

from __future__ import annotations

from pathlib import Path

import typer

from ffem_cli.console import err


def gallery(
    path: Path = typer.Argument(..., help="Gallery written by ffem embed (Parquet)."),
    remove: str | None = typer.Option(
        None, "--remove", help="Delete every image of this identity (the file is rewritten atomically)."
    ),
) -> None:
    """List the identities of a gallery with their image counts; --remove ID deletes one."""
    from ffem_cli.evaluate.report import print_table
    from ffem_cli.inference import gallery as core

    if remove is not None:
        removed = core.remove_identity(path, remove)
        err.print(f"removed {removed} images of {remove!r} from {path}", highlight=False)
        return
    counts = core.identity_counts(path)
    print_table(f"{path}: {sum(c[1] for c in counts)} images, {len(counts)} identities",
                ["identity", "images", "with a face"], [list(c) for c in counts])  # fmt: skip
