"""`ffem inspect PATH`: counts, pictures and an integrity check of a pack, image list or RecordIO set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from ffem_cli.console import err, out
from ffem_cli.errors import FfemError


def inspect(
    path: Path = typer.Argument(
        ...,
        help="A pack folder, an image_list.json (with --root), a train.rec, a seed .tfrecord or a crops folder (--crops).",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Folder for images_per_identity.png and contact_sheet.png (new, or one ffem wrote).",
    ),
    verify: bool = typer.Option(
        False, "--verify", help="Re-hash a pack's shards against its manifest; name each damaged record."
    ),
    root: Path | None = typer.Option(None, "--root", help="Folder an image list's paths are relative to."),
    crops: bool = typer.Option(False, "--crops", help="PATH is a folder of face crops."),
    seed: int = typer.Option(0, "--seed", help="Seed of the contact sheet's random faces."),
) -> None:
    """Show what PATH holds: images, identities, images per identity, clipped and rejected faces."""
    from ffem_cli.data.inspect import inspect_path, verify_pack, write_pictures

    found = inspect_path(path, root, crops)
    per_identity = found.per_identity()
    table = Table(title=f"ffem inspect: {path} ({found.kind})", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("images", f"{len(found.labels):,}")
    table.add_row("identities", f"{len(per_identity):,}")
    table.add_row(
        "images per identity (min / median / max)",
        f"{per_identity.min():,} / {np.median(per_identity):,.1f} / {per_identity.max():,}",
    )
    for name, count in found.counts.items():
        table.add_row(name, f"{count:,}")
    out.print(table)
    if output is not None:
        written = write_pictures(found, output, seed)
        out.print("wrote " + " and ".join(str(p) for p in written), highlight=False)
    if verify:
        if found.kind != "ffem pack":
            raise FfemError("--verify checks a finished ffem pack (a folder with manifest.json)")
        problems = verify_pack(path)
        for problem in problems:
            err.print(f"[red]damaged:[/] {problem}", highlight=False, soft_wrap=True)
        if problems:
            raise FfemError(
                f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''} found; repack (pack --resume rewrites damaged shards)"
            )
        out.print("verified: every shard and the index match the manifest")
