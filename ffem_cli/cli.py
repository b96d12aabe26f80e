"""The ``ffem`` command: a Typer app that wires commands to the core library.

Each command lives in ``ffem_cli/commands/<name>.py`` as a plain typed
function (argument parsing and console output only; the work is in the core
modules). This file registers them and turns ``FfemError`` into one
``error: ...`` line and a non-zero exit status.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable

import typer
from rich.text import Text

from ffem_cli import __version__
from ffem_cli.console import err, filter_native_logs
from ffem_cli.errors import FfemError

# Top-level commands in help order: name -> (module in ffem_cli.commands, function). "eval" is a group.
COMMANDS = {
    "detect": ("detect", "detect"),
    "convert": ("convert", "convert"),
    "pack": ("pack", "pack"),
    "inspect": ("inspect", "inspect"),
    "train": ("train", "train"),
    "ensemble": ("ensemble", "ensemble"),
    "eval": ("evaluate", "COMMANDS"),
    "export": ("export", "export"),
    "calibrate": ("calibrate", "calibrate"),
    "verify": ("verify", "verify"),
    "pairs": ("pairs", "pairs"),
    "embed": ("embed", "embed"),
    "search": ("embed", "search"),
    "gallery": ("gallery", "gallery"),
    "map": ("embed", "map_command"),
    "models": ("models", "models"),
}


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


def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show versions and exit."),
) -> None:
    """Face Feature Embedding Module."""


def build_app(names: list[str] | None = None) -> typer.Typer:
    """The ``ffem`` app with the commands ``names`` (default: all), importing only their modules."""
    app = typer.Typer(
        name="ffem",
        help="Face Feature Embedding Module: face photos to a trained, evaluated, exported embedding model.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode="rich",
    )
    app.callback()(main_callback)
    for name in names or COMMANDS:
        module_name, attribute = COMMANDS[name]
        target = getattr(importlib.import_module(f"ffem_cli.commands.{module_name}"), attribute)
        if name == "eval":
            evaluate_app = typer.Typer(
                help="Evaluate an embedding model: RFW, LFW, pair lists, labelled folders, insightface .bin sets.",
                no_args_is_help=True,
            )
            register(evaluate_app, *target)
            app.add_typer(evaluate_app, name="eval")
        else:
            register(app, target)
    return app


def __getattr__(name: str) -> typer.Typer:
    """``ffem_cli.cli.app``: the whole app, built on first use (tests and tools import it)."""
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(name)


def main() -> None:
    """Console-script entry point. ``ffem COMMAND ...`` builds only that command (its imports alone);
    anything else (``ffem``, ``--help``, ``--version``) gets the whole app."""
    filter_native_logs()
    command = sys.argv[1] if len(sys.argv) > 1 else None
    build_app([command] if command in COMMANDS else None)()
