"""`ffem pack`: face sources (image lists, RecordIO, seed TFRecords, crops) → TFRecord shards + manifest.json."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from ffem_cli.console import err, out, progress_updates


def pack(
    sources: list[Path] = typer.Argument(
        ...,
        help="image_list.json (needs --root), insightface train.rec (or its folder), seed .tfrecord "
        "file(s), or a folder of face crops (--crops). Several are merged into one label space.",
    ),
    root: Path | None = typer.Option(None, "--root", help="Folder the image lists' image paths are relative to."),
    output: Path = typer.Option(..., "--output", "-o", help="Pack directory to write."),
    size: int = typer.Option(112, "--size", help="Side of the square face crop, pixels."),
    margin: float = typer.Option(0.2, "--margin", help="Fraction of the box's longer side added on each side."),
    align: bool = typer.Option(
        False,
        "--align",
        help="Align the 5 landmarks to the ArcFace template instead of box+margin.",
    ),
    shards: int = typer.Option(16, "--shards", help="Number of TFRecord shards."),
    workers: int = typer.Option(2, "--workers", help="Worker processes (each writes whole shards)."),
    quality: int = typer.Option(95, "--quality", help="JPEG quality of the stored crops (1-100)."),
    seed: int | None = typer.Option(
        None,
        "--seed",
        help="Seed of the shard shuffle (0 when not given); with --identities, picks a random N.",
    ),
    crops: bool = typer.Option(False, "--crops", help="Folder SOURCEs are face crops: the whole image is the face."),
    strict_boxes: bool = typer.Option(
        False,
        "--strict-boxes",
        help="Refuse boxes not wholly inside their image (default: crop them with padding).",
    ),
    relabel: bool = typer.Option(False, "--relabel", help="Compact label gaps (old → new recorded in the manifest)."),
    identities: int | None = typer.Option(
        None, "--identities", help="Keep N identities: the first N by label, or random with --seed."
    ),
    groups: str | None = typer.Option(
        None, "--groups", help="Keep these groups only, comma-separated (e.g. African,Asian)."
    ),
    min_images: int = typer.Option(1, "--min-images", help="Keep identities with at least K images."),
    max_images_per_identity: int | None = typer.Option(
        None, "--max-images-per-identity", help="Keep at most M images per identity (seeded choice)."
    ),
    same_identities: bool = typer.Option(
        False,
        "--same-identities",
        help="Merge identities of several sources by name (default: disjoint, prefixed by source).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Keep shards an interrupted run finished (checksums checked)."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace a finished pack already in --output (the old one stays until the new one is complete).",
    ),
    follow_symlinks: bool = typer.Option(
        False,
        "--follow-symlinks",
        help="Read images through symlinks that leave --root or a crops folder (refused by default).",
    ),
) -> None:
    """Crop every face of the SOURCEs and write shuffled TFRecord shards plus manifest.json.

    Faces already at --size without a box (RecordIO, crops) are copied through
    undecoded. Shaping (--groups, --min-images, --identities,
    --max-images-per-identity, in that order) happens before packing.
    """
    from ffem_cli.data.pack import PackSettings, pack_sources
    from ffem_cli.data.shaping import Shaping
    from ffem_cli.data.sources import open_source

    settings = PackSettings(
        image_size=size,
        crop="align" if align else "margin",
        margin=margin,
        shards=shards,
        jpeg_quality=quality,
        seed=seed or 0,
    )
    shaping = Shaping(
        identities=identities,
        seed=seed,
        groups=tuple(g.strip() for g in groups.split(",") if g.strip()) if groups else (),
        min_images=min_images,
        max_images_per_identity=max_images_per_identity,
        same_identities=same_identities,
        relabel=relabel,
    )
    opened = [open_source(path, root, crops, strict_boxes, relabel, follow_symlinks) for path in sources]
    # The bar starts once validation has passed, so a bad list prints only its error line.
    with progress_updates("pack", unit="img") as on_progress:
        result = pack_sources(
            opened,
            output,
            settings,
            shaping,
            workers=workers,
            resume=resume,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    table = Table(title=f"ffem pack → {result.output}", show_header=False)
    table.add_row("images written", f"{result.images:,}")
    table.add_row("identities", f"{result.identities:,}")
    table.add_row("copied through undecoded", f"{result.passed_through:,}")
    table.add_row("boxes clipped (padded)", f"{result.clipped:,}")
    table.add_row("rejected before packing", f"{result.rejected:,} (see rejects.json)")
    table.add_row("shards", f"{result.shards} ({result.kept_shards} kept from before)")
    table.add_row("crop", f"{settings.crop}, {size}x{size}" + ("" if align else f", margin {margin}"))
    table.add_row("images/s", f"{result.images_written / max(result.seconds, 1e-9):,.1f}")
    reasons = Counter(skip["reason"] for skip in result.skipped)
    table.add_row(
        "skipped",
        f"{len(result.skipped)}"
        + (" (" + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ")" if reasons else ""),
    )
    out.print(table)
    if result.shards < shards:
        err.print(
            f"[yellow]note:[/] --shards {shards} capped at {result.shards}, the number of images", highlight=False
        )
