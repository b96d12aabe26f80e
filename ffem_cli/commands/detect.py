"""`ffem detect`: an identity folder of photos → image_list.json (MTCNN)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ffem_cli.commands.options import OVERWRITE
from ffem_cli.console import err, out, progress_updates
from ffem_cli.errors import FfemError
from ffem_cli.images import DEFAULT_MAX_PIXELS


def parse_thresholds(text: str) -> tuple[float, float, float]:
    """``"0.8"`` (ONet only) or ``"0.6,0.7,0.8"`` (PNet, RNet, ONet) → three floats."""
    defaults = (0.6, 0.7)
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise FfemError(
            f"--threshold {text!r}: give one number (ONet) or three (PNet,RNet,ONet), e.g. 0.6,0.7,0.8"
        ) from None
    if len(values) == 1:
        return (*defaults, values[0])
    if len(values) == 3:
        return values
    raise FfemError(f"--threshold {text!r}: give one number (ONet) or three (PNet,RNet,ONet), not {len(values)}")


def detect(
    root: Path = typer.Argument(..., help="Folder of ROOT/<identity>/<image> photos (jpg, jpeg, png, bmp; any case)."),
    output: Path = typer.Option(
        Path("image_list.json"),
        "--output",
        "-o",
        help="Image list to write; <stem>.label_map.json is written beside it.",
    ),
    batch_size: int = typer.Option(16, help="Images per MTCNN call (images of one size are batched together)."),
    min_face_size: int = typer.Option(20, help="Smallest face searched, in pixels (larger is faster)."),
    threshold: str = typer.Option(
        "0.6,0.7,0.8", help="Confidence thresholds: ONet alone (0.9) or PNet,RNet,ONet (0.6,0.7,0.8)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Skip images an earlier (interrupted) run already listed or rejected."
    ),
    rejects: Path | None = typer.Option(
        None, help="Where to list rejected images [default: <output stem>.rejects.json]."
    ),
    workers: int = typer.Option(4, help="Threads decoding images ahead of the detector."),
    depth: int = typer.Option(
        1, "--depth", help="2 for ROOT/<group>/<identity>/<image> (RFW, BUPT): the group is kept for pack --groups."
    ),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS,
        "--max-pixels",
        help="Reject images whose header claims more pixels (decompression bombs) before decoding them.",
    ),
    max_side: int = typer.Option(
        2048,
        "--max-side",
        help="Shrink larger photos to this longer side (pixels) before detection; boxes are mapped back.",
    ),
    follow_symlinks: bool = typer.Option(
        False, "--follow-symlinks", help="Read images through symlinks that leave ROOT (refused by default)."
    ),
    keep: str = typer.Option(
        "largest",
        "--keep",
        help="Which face of a photo with several to list: largest (area x confidence) or central "
        "(the face at the photo's centre, for sets cut around their subject such as LFW).",
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """Find one face per photo with MTCNN and write the image list.

    Where a photo holds several faces, one is kept and the others are
    counted: by default the one with the largest area x confidence (the main
    subject); with --keep central the one at the photo's centre. Photos
    with no face, too small, corrupt, unreadable or missing go to the rejects
    file with the reason. Labels are 0..N-1 over the sorted names of the
    identities that keep a face. Progress is checkpointed; a killed run
    continues with --resume, and the list is only written, atomically, when
    the run completes.
    """
    from ffem_cli.data.detect import DetectOptions, default_rejects_path, detect_folder
    from ffem_cli.data.image_list import label_map_path
    from ffem_cli.writable import check_new_file

    for path in (output, label_map_path(output), rejects or default_rejects_path(output)):
        check_new_file(path, overwrite or resume)  # --resume continues the files an earlier run wrote
    options = DetectOptions(
        batch_size=batch_size,
        min_face_size=min_face_size,
        thresholds=parse_thresholds(threshold),
        workers=workers,
        max_pixels=max_pixels,
        max_side=max_side,
        follow_symlinks=follow_symlinks,
        keep=keep,
    )
    with progress_updates("detect", unit="img") as progress:
        summary = detect_folder(
            root, output, options, resume=resume, rejects_path=rejects, progress=progress, depth=depth
        )

    table = Table(title=f"ffem detect: {root}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("images under ROOT", f"{summary.images:,}")
    if summary.skipped:
        table.add_row("done by an earlier run (resumed)", f"{summary.skipped:,}")
    table.add_row("processed now", f"{summary.processed:,}")
    table.add_row("kept (one face each)", f"{summary.kept:,}")
    for reason, count in sorted(summary.rejected.items()):
        table.add_row(f"rejected: {reason}", f"{count:,}")
    if summary.downscaled:
        table.add_row(f"shrunk to {max_side} px for detection", f"{summary.downscaled:,}")
    table.add_row("extra faces not kept", f"{summary.extra_faces:,} in {summary.images_with_extra_faces:,} images")
    table.add_row("identities (labels)", f"{summary.identities:,}")
    table.add_row(
        "speed",
        f"{summary.images_per_second:,.1f} images/s ({summary.seconds:,.1f} s, {summary.startup_seconds:,.1f} s loading MTCNN)",
    )
    out.print(table)
    if summary.identities_without_face:
        names = ", ".join(summary.identities_without_face[:5])
        more = (
            f" and {len(summary.identities_without_face) - 5} more" if len(summary.identities_without_face) > 5 else ""
        )
        err.print(
            f"[yellow]note:[/] no face kept for {len(summary.identities_without_face)} identities ({names}{more}); they get no label"
        )
    out.print(f"wrote {summary.output}, {summary.label_map_path} and {summary.rejects_path}", highlight=False)
