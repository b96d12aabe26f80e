"""Commands that write one file to a path the user names refuse an existing file without --overwrite.

The refusal comes before any model or detector loads, and leaves the file as it was.
"""

import pytest
from typer.testing import CliRunner

from ffem_cli.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "name, command",
    [
        ("image_list.json", ["detect", "{root}", "-o", "{file}"]),
        ("image_list.label_map.json", ["detect", "{root}", "-o", "{dir}/image_list.json"]),
        ("image_list.rejects.json", ["detect", "{root}", "-o", "{dir}/image_list.json"]),
        ("list.json", ["convert", "vggface2", "{dir}/loose_bb_train.csv", "-o", "{file}"]),
        ("pairs.csv", ["pairs", "{root}", "-o", "{file}"]),
        ("gallery.parquet", ["embed", "{root}", "-o", "{file}", "--model", "{dir}/none.keras"]),
        ("strip.png", ["search", "{dir}/q.jpg", "--gallery", "{dir}/g.parquet", "-o", "{file}"]),
        ("map.png", ["map", "--gallery", "{dir}/g.parquet", "-o", "{file}"]),
        (
            "scores.csv",
            [
                "eval",
                "pairs",
                "--list",
                "{dir}/l.csv",
                "--root",
                "{root}",
                "--model",
                "{dir}/none.keras",
                "--output",
                "{file}",
            ],
        ),
    ],
)
def test_an_existing_output_file_is_refused_and_kept(tmp_path, name, command):
    root = tmp_path / "photos"
    (root / "someone").mkdir(parents=True)
    mine = tmp_path / name
    mine.write_text("the user's own file\n")
    args = [part.format(root=root, file=mine, dir=tmp_path) for part in command]
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert f"{mine}: already exists; pass --overwrite to replace it" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert mine.read_text() == "the user's own file\n"


def test_overwrite_replaces_and_a_new_path_needs_no_flag(tmp_path):
    root = tmp_path / "photos"
    for person in ("ann", "bob"):
        (root / person).mkdir(parents=True)
        for i in range(3):
            (root / person / f"{i}.jpg").write_bytes(b"")  # pairs reads names only
    listed = tmp_path / "pairs.csv"
    assert invoke("pairs", root, "-o", listed, "--pairs", 2, "--folds", 1).exit_code == 0
    first = listed.read_text()
    assert invoke("pairs", root, "-o", listed, "--pairs", 2, "--folds", 1).exit_code == 1
    result = invoke("pairs", root, "-o", listed, "--pairs", 3, "--folds", 1, "--overwrite")
    assert result.exit_code == 0, result.output
    assert listed.read_text() != first and listed.read_text().count("\n") == 6
