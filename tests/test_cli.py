"""The ffem command itself: the command list, versions, quiet start-up."""

import subprocess
import sys

from typer.testing import CliRunner

from ffem_cli import __version__
from ffem_cli.cli import app

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "detect",
        "pack",
        "train",
        "eval",
        "export",
        "calibrate",
        "verify",
        "pairs",
        "embed",
        "search",
        "gallery",
        "map",
        "models",
    ):
        assert f" {command} " in result.output


def test_eval_lists_its_protocols():
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    for protocol in ("rfw", "lfw", "pairs", "folder"):
        assert f" {protocol} " in result.output


def test_version_names_ffem_tensorflow_and_keras_without_native_log_noise():
    script = "import sys; sys.argv = ['ffem', '--version']; from ffem_cli.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert result.stdout.startswith(f"ffem {__version__} (TensorFlow 2.21")
    assert "Keras 3.15" in result.stdout
    assert "absl::InitializeLog" not in result.stderr
    assert "cudart_stub" not in result.stderr


def test_error_line_is_printed_verbatim_with_its_exit_code():
    import typer

    from ffem_cli.cli import register
    from ffem_cli.errors import FfemError

    def broken() -> None:
        raise FfemError("run.toml has no [data] table", exit_code=3)

    demo = typer.Typer()
    register(demo, broken)
    result = runner.invoke(demo, [])
    assert result.exit_code == 3
    assert result.output == "error: run.toml has no [data] table\n"


def test_one_command_is_built_alone_with_the_same_help():
    """``ffem pack …`` builds only ``pack`` (none of the other commands' imports), and says the same."""
    from ffem_cli.cli import build_app

    script = (
        "import sys; from ffem_cli.cli import build_app; build_app(['pack']); "
        "print(sorted(m for m in sys.modules if m.startswith('ffem_cli.commands.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert loaded.stdout.split() == ["['ffem_cli.commands.pack']"], loaded.stderr
    for name in ("pack", "eval", "map"):
        alone = runner.invoke(build_app([name]), [name, "--help"], terminal_width=100)
        whole = runner.invoke(app, [name, "--help"], terminal_width=100)
        assert alone.exit_code == whole.exit_code == 0
        assert alone.output == whole.output
