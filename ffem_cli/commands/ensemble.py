"""`ffem ensemble RUN... --run OUT`: several trained runs as one embedder."""

from __future__ import annotations

from pathlib import Path

import typer

from ffem_cli.console import err


def ensemble(
    members: list[Path] = typer.Argument(..., help="Two or more run directories trained on the same face crop."),
    run: Path = typer.Option(..., "--run", help="New run directory for the ensemble (embedder.keras + run.toml)."),
) -> None:
    """Join trained runs into one embedder: their unit embeddings concatenated and re-normalised, so a pair's
    cosine is the mean of the members' cosines. The result is a run like any other (eval, embed, export...)."""
    from ffem_cli.models.ensemble import write_ensemble_run

    config = write_ensemble_run(members, run)
    sizes = " + ".join(str(member["embedding_size"]) for member in config["ensemble"]["members"])
    err.print(
        f"wrote {run}: {len(members)} members, embedding {sizes} = {config['model']['embedding_size']} dimensions, "
        f"{config['data']['image_size']} px {config['data']['crop']} crops",
        highlight=False,
    )
