"""`ffem convert vggface2|rfw FILE... -o image_list.json`: shipped box/landmark files → an image list."""

from __future__ import annotations

from pathlib import Path

import typer

from ffem_cli.commands.options import OVERWRITE
from ffem_cli.console import out


def convert(
    kind: str = typer.Argument(..., help="vggface2 (loose_bb_*.csv / loose_landmark_*.csv) or rfw (<Race>_lmk.txt)."),
    files: list[Path] = typer.Argument(..., help="The box and/or landmark files of the set."),
    output: Path = typer.Option(
        Path("image_list.json"), "--output", "-o", help="Image list to write; <stem>.label_map.json goes beside it."
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """Turn a set's own box/landmark files into image_list.json (landmark boxes as the seed made them)."""
    from ffem_cli.data.convert import convert as write_list
    from ffem_cli.data.image_list import label_map_path
    from ffem_cli.writable import check_new_file

    for path in (output, label_map_path(output)):
        check_new_file(path, overwrite)
    entries, identities = write_list(kind, files, output)
    out.print(
        f"wrote {output}: {entries:,} faces of {identities:,} identities (and {label_map_path(output).name})",
        highlight=False,
    )
