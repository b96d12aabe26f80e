"""`ffem models`: the backbones, poolings and losses ffem knows."""

from __future__ import annotations

import typer

from ffem_cli.console import out, progress_bar


def models(
    embedding_size: int = typer.Option(
        512, "--embedding-size", min=1, help="Embedding width D the counts are made with."
    ),
    input_size: int = typer.Option(112, "--input-size", min=32, help="Side of the square face crop, pixels."),
) -> None:
    """List backbones (parameters, GMACs and GFLOPs per image), poolings, losses and miners."""
    from rich.table import Table

    from ffem_cli import losses
    from ffem_cli.models import BACKBONES, POOLINGS
    from ffem_cli.models.catalog import backbone_rows, registry_rows

    table = Table(
        title=f"Backbones at {input_size}×{input_size}, {embedding_size}-d embedding",
        caption="params exclude BN moving statistics; GMACs = conv+FC multiply-accumulates "
        "per forward image; GFLOPs = 2·GMACs (a training step ≈ 3× that)",
    )
    for column in ("backbone", "params (M)", "GMACs", "GFLOPs", "default head", "paper"):
        numeric = column in ("params (M)", "GMACs", "GFLOPs")
        table.add_column(
            column,
            justify="right" if numeric else "left",
            no_wrap=column != "paper",
        )
    with progress_bar(transient=True) as bar:
        measured = sum(input_size >= spec.min_input_size for spec in BACKBONES.values())
        task = bar.add_task("measure backbones", total=measured, unit="model")
        for row in backbone_rows(embedding_size, input_size):
            table.add_row(
                row.name,
                f"{row.parameters / 1e6:.2f}",
                f"{row.macs / 1e9:.3f}",
                f"{2 * row.macs / 1e9:.3f}",
                row.pooling,
                row.paper,
            )
            bar.advance(task)
    out.print(table)
    too_small = [name for name, spec in BACKBONES.items() if input_size < spec.min_input_size]
    if too_small:
        out.print(f"left out (need a larger input than {input_size} px): {', '.join(too_small)}")

    poolings = Table(title="Poolings / embedding heads (--pooling)")
    poolings.add_column("pooling", no_wrap=True)
    poolings.add_column("layers")
    poolings.add_column("paper")
    for name, spec in POOLINGS.items():
        poolings.add_row(name, spec.summary, spec.paper)
    out.print(poolings)

    _print_recipes()

    for title, registry, with_family in (
        ("Losses (--loss)", losses.LOSSES, True),
        ("Miners (--miner)", losses.MINERS, False),
    ):
        listing = Table(title=title)
        listing.add_column("name", no_wrap=True)
        if with_family:
            listing.add_column("family", no_wrap=True)
        listing.add_column("defaults")
        listing.add_column("paper")
        for name, family, defaults, paper in registry_rows(registry):
            listing.add_row(name, *([family] if with_family else []), defaults, paper)
        out.print(listing)


def _print_recipes() -> None:
    """The ``ffem train --recipe`` names with what each sets and where it comes from."""
    from rich.table import Table

    from ffem_cli.train.recipes import recipe_info, recipe_names

    recipes = Table(title="Recipes (ffem train --recipe)")
    for column in ("recipe", "what it sets", "from"):
        recipes.add_column(column, no_wrap=column == "recipe")
    for name in recipe_names():
        info = recipe_info(name)
        recipes.add_row(name, info["summary"], info["source"])
    out.print(recipes)
