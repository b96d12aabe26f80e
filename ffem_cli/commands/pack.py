"""`ffem pack`: image_list.json → cropped-face TFRecord shards + manifest.json."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from ffem_cli.console import err, out, progress_bar


def pack(
    image_list: Path = typer.Argument(..., help="image_list.json written by ffem detect."),
    root: Path = typer.Option(..., "--root", help="Folder the list's image paths are relative to."),
    output: Path = typer.Option(..., "--output", "-o", help="Pack directory to write."),
    size: int = typer.Option(112, "--size", help="Side of the square face crop, pixels."),
    margin: float = typer.Option(
        0.2, "--margin", help="Fraction of the box's longer side added on each side."
    ),
    align: bool = typer.Option(
        False,
        "--align",
        help="Align the 5 landmarks to the ArcFace template instead of box+margin.",
    ),
    shards: int = typer.Option(16, "--shards", help="Number of TFRecord shards."),
    workers: int = typer.Option(
        2, "--workers", help="Worker processes (each writes whole shards)."
    ),
    quality: int = typer.Option(95, "--quality", help="JPEG quality of the stored crops (1-100)."),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the shuffle that spreads faces over shards."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Keep shards an interrupted run finished (checksums checked)."
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace a finished pack already in --output (the old one stays until the new one is complete).",
    ),
    follow_symlinks: bool = typer.Option(
        False, "--follow-symlinks", help="Read images through symlinks that leave --root (refused by default)."
    ),
) -> None:
    """Crop every face of IMAGE_LIST and write shuffled TFRecord shards plus manifest.json."""
    from ffem_cli.data.pack import PackSettings
    from ffem_cli.data.pack import pack as write_pack

    settings = PackSettings(
        image_size=size,
        crop="align" if align else "margin",
        margin=margin,
        shards=shards,
        jpeg_quality=quality,
        seed=seed,
    )
    # The bar starts once validation has passed, so a bad list prints only its error line.
    bar = progress_bar()
    task = bar.add_task("pack", total=None, unit="img")

    def on_progress(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        result = write_pack(
            image_list,
            root,
            output,
            settings,
            workers=workers,
            resume=resume,
            overwrite=overwrite,
            on_progress=on_progress,
            follow_symlinks=follow_symlinks,
        )
    finally:
        bar.stop()
    table = Table(title=f"ffem pack → {result.output}", show_header=False)
    table.add_row("images written", f"{result.images:,}")
    table.add_row("shards", f"{result.shards} ({result.kept_shards} kept from before)")
    table.add_row(
        "crop", f"{settings.crop}, {size}x{size}" + ("" if align else f", margin {margin}")
    )
    table.add_row("images/s", f"{result.images_written / max(result.seconds, 1e-9):,.1f}")
    reasons = Counter(skip["reason"] for skip in result.skipped)
    table.add_row(
        "skipped",
        f"{len(result.skipped)}"
        + (
            " (" + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ")"
            if reasons
            else ""
        ),
    )
    out.print(table)
    if result.shards < shards:
        err.print(f"[yellow]note:[/] --shards {shards} capped at {result.shards}, the number of images", highlight=False)
