"""Typer options that several commands share, defined once."""

import typer

OVERWRITE = typer.Option(
    False,
    "--overwrite",
    help="Replace output files that already exist (refused by default: ffem cannot tell it wrote them).",
)
