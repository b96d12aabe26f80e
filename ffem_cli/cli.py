"""The ``ffem`` command: a Typer app that wires commands to the core library.

Each command lives in ``ffem_cli/commands/<name>.py`` as a plain typed
function (argument parsing and console output only; the work is in the core
modules). This file registers them and turns ``FfemError`` into one
``error: ...`` line and a non-zero exit status.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer
from rich.text import Text

from ffem_cli import __version__
from ffem_cli.commands import (
    calibrate,
    convert,
    detect,
    embed,
    evaluate,
    export,
    gallery,
    inspect,
    models,
    pack,
    pairs,
    train,
    verify,
)
from ffem_cli.console import err, filter_native_logs
from ffem_cli.errors import FfemError

app = typer.Typer(
    name="ffem",
    help="Face Feature Embedding Module: face photos to a trained, evaluated, exported embedding model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


def guarded(command: Callable) -> Callable:
    """Run ``command``; report an ``FfemError`` as one line and exit with its code."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FfemError as exc:
            err.print(Text.assemble(("error:", "bold red"), f" {exc}"), highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return run


def register(target: typer.Typer, *commands: Callable) -> None:
    for command in commands:
        target.command(name=command.__name__.replace("_", "-").removesuffix("-command"))(guarded(command))


def _version(value: bool) -> None:
    if value:
        import keras
        import tensorflow as tf

        typer.echo(f"ffem {__version__} (TensorFlow {tf.__version__}, Keras {keras.__version__})")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show versions and exit."),
) -> None:
    """Face Feature Embedding Module."""


register(app, detect.detect, convert.convert, pack.pack, inspect.inspect, train.train)
evaluate_app = typer.Typer(
    help="Evaluate an embedding model: RFW, LFW, pair lists, labelled folders, insightface .bin sets.",
    no_args_is_help=True,
)
register(evaluate_app, *evaluate.COMMANDS)
app.add_typer(evaluate_app, name="eval")
register(
    app,
    export.export,
    calibrate.calibrate,
    verify.verify,
    pairs.pairs,
    embed.embed,
    embed.search,
    gallery.gallery,
    embed.map_command,
    models.models,
)


def main() -> None:
    """Console-script entry point."""
    filter_native_logs()
    app()
