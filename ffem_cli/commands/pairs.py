"""`ffem pairs`: a verification pair list from any labelled folder or pack."""

from __future__ import annotations

from pathlib import Path

import typer

from ffem_cli.commands.options import OVERWRITE
from ffem_cli.console import err


def pairs(
    source: Path = typer.Argument(..., help="Labelled folder ROOT/<identity>/<image>, or a pack directory."),
    output: Path = typer.Option(..., "--output", "-o", help="The list to write, e.g. pairs.csv."),
    count: int = typer.Option(3000, "--pairs", min=1, help="Genuine pairs to draw, and as many impostor pairs."),
    folds: int = typer.Option(10, "--folds", min=1, help="Identity-disjoint folds (no person in two folds)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold split and the draws."),
    fmt: str = typer.Option(
        "ee488b", "--format", help="ee488b: 'label,path1,path2' lines; lfw: LFW's pairs.txt layout."
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """Draw N genuine + N impostor pairs in identity-disjoint folds (as LFW's View 2 is built); refuses when it cannot."""
    from ffem_cli import atomic
    from ffem_cli.inference.pairs import format_pair_list, labelled_keys, make_pair_list
    from ffem_cli.writable import check_new_file

    check_new_file(output, overwrite)
    keys, labels = labelled_keys(source)
    draw = make_pair_list(labels, count, folds, seed)
    atomic.write_text(output, format_pair_list(draw, keys, fmt.lower()))
    err.print(f"wrote {output}: {count} genuine + {count} impostor pairs in {folds} identity-disjoint folds "
              f"from {len(keys)} images of {len(set(labels.tolist()))} identities (seed {seed})", highlight=False)  # fmt: skip
