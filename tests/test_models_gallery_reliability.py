"""Hostile model files, run.toml tables and gallery files: one ``error:`` line each, never a traceback.
Every file is written by the test (a tiny untrained embedder, synthetic faces, hand-made Parquet)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from eval_fixtures import make_run
from fault_fixtures import read_only_folder
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.errors import FfemError
from ffem_cli.inference.gallery import METADATA_KEY, read_gallery


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result, expected: str) -> None:
    """Exit 1 and one ``error:`` line holding ``expected``, the last thing printed (after any progress bar)."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], result.output
    assert expected in lines[-1] and "Traceback" not in result.output, result.output


@pytest.fixture(scope="module")
def work(tmp_path_factory, synthetic_faces):
    """A run, a gallery embedded with it (from the run's folder), and a query photo."""
    root, _ = synthetic_faces
    work = tmp_path_factory.mktemp("hostile")
    run = make_run(work)
    gallery = work / "gallery.parquet"
    assert invoke("embed", root, "--run", run, "-o", gallery).exit_code == 0
    return {"root": root, "run": run, "gallery": gallery, "query": root / "synthetic_2" / "001.jpg", "dir": work}


def write_gallery(path, columns: dict, metadata: bytes | None = b'{"model": "m.keras"}'):
    table = pa.table(columns)
    if metadata is not None:
        table = table.replace_schema_metadata({METADATA_KEY: metadata})
    pq.write_table(table, path)
    return path


def good_columns(rows: int = 3, dim: int = 4) -> dict:
    vectors = np.eye(rows, dim, dtype=np.float32)
    return {
        "path": pa.array([f"/x/{i}.jpg" for i in range(rows)]),
        "face_found": pa.array([True] * rows),
        "embedding": pa.array([list(v) for v in vectors], pa.list_(pa.float32())),
    }


HOSTILE_GALLERIES = {
    "metadata not JSON": ({}, b"{not json", "its 'ffem' metadata is not JSON"),
    "metadata a list": ({}, b"[1, 2]", "its 'ffem' metadata is a list, not an object"),
    "preparation of the wrong type": (
        {},
        b'{"model": "m.keras", "preparation": {"image_size": "abc"}}',
        "its 'ffem' metadata has fields of the wrong type",
    ),
    "ragged embeddings": (
        {"embedding": pa.array([[1.0, 0.0], [1.0], [0.0, 1.0]], pa.list_(pa.float32()))},
        None,
        "empty or different-length embeddings (lengths [1, 2])",
    ),
    "face_found strings": ({"face_found": pa.array(["yes", "no", "yes"])}, None, "column 'face_found' holds string"),
    "scalar embedding column": (
        {"embedding": pa.array([0.1, 0.2, 0.3], pa.float32())},
        None,
        "column 'embedding' holds float, not lists of numbers",
    ),
    "NaN embeddings": (
        {"embedding": pa.array([[np.nan] * 4] * 3, pa.list_(pa.float32()))},
        None,
        "3 rows with NaN or infinite embeddings, the first is row 0",
    ),
    "path numbers": ({"path": pa.array([1, 2, 3])}, None, "column 'path' holds int64"),
    "null path": ({"path": pa.array(["/a.jpg", None, "/c.jpg"])}, None, "column 'path' has empty values"),
}


@pytest.mark.parametrize("case", list(HOSTILE_GALLERIES))
def test_hostile_gallery_is_one_error_line_in_search_and_map(work, tmp_path, case):
    changes, metadata, expected = HOSTILE_GALLERIES[case]
    path = write_gallery(
        tmp_path / "g.parquet",
        {**good_columns(), **changes},
        metadata if metadata is not None else b'{"model": "m.keras"}',
    )
    with pytest.raises(FfemError, match="^" + str(path).replace(".", r"\.") + ": "):
        read_gallery(path)
    one_error_line(invoke("search", work["query"], "--gallery", path, "--run", work["run"]), expected)
    one_error_line(invoke("map", "--gallery", path, "-o", tmp_path / "map.png"), expected)
    assert not (tmp_path / "map.png").exists()


def test_a_gallery_records_its_model_by_absolute_path_so_search_works_from_elsewhere(work, tmp_path, monkeypatch):
    monkeypatch.chdir(work["dir"])
    relative = work["dir"] / "relative.parquet"
    assert invoke("embed", work["root"], "--run", "run", "-o", relative.name).exit_code == 0
    metadata = json.loads(pq.read_schema(relative).metadata[METADATA_KEY])
    assert metadata["model"] == str((work["run"] / "embedder.keras").resolve())
    monkeypatch.chdir(tmp_path)  # another folder, no --run: the recorded model is found
    result = invoke("search", work["query"], "--gallery", relative)
    assert result.exit_code == 0, result.output
    assert "synthetic_2" in result.output


def test_a_model_giving_nan_writes_no_gallery_and_a_moved_model_is_named(work, tmp_path):
    inputs = keras.Input((32, 32, 3))
    broken = keras.Model(inputs, keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(inputs)))
    broken.set_weights([np.full_like(w, np.nan) for w in broken.get_weights()])
    path = save(broken, tmp_path / "nan.keras")
    one_error_line(
        invoke("embed", work["root"], "--model", path, "-o", tmp_path / "g.parquet"),
        f"{path}: gave NaN or infinite embeddings for 36 faces; {tmp_path / 'g.parquet'} was not written",
    )
    assert not (tmp_path / "g.parquet").exists()
    table = pq.read_table(work["gallery"])
    metadata = {**json.loads(table.schema.metadata[METADATA_KEY]), "model": str(tmp_path / "gone.keras")}
    moved = write_gallery(
        tmp_path / "moved.parquet", {n: table.column(n) for n in table.column_names}, json.dumps(metadata).encode()
    )
    one_error_line(
        invoke("search", work["query"], "--gallery", moved),
        f"the gallery's model {tmp_path / 'gone.keras'} is not there any more; give --run or --model",
    )


def save(model: keras.Model, path):
    model.save(path)
    return path


def test_a_model_that_is_not_one_vector_per_face_is_refused(work, tmp_path):
    inputs = keras.Input((32, 32, 3))
    feature_map = save(keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs)), tmp_path / "map.keras")
    one_error_line(
        invoke("embed", work["root"], "--model", feature_map, "-o", tmp_path / "g.parquet"),
        "an embedder gives one vector (N, D) per face, this model gives (None, 30, 30, 4)",
    )
    flat_input = keras.Input((8,))
    vectors = save(keras.Model(flat_input, keras.layers.Dense(4)(flat_input)), tmp_path / "flat.keras")
    one_error_line(
        invoke("embed", work["root"], "--model", vectors, "-o", tmp_path / "g.parquet"),
        "an embedder takes (N, S, S, 3) faces, this model takes (None, 8)",
    )
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    two = save(keras.Model(inputs, [pooled, pooled]), tmp_path / "two.keras")
    one_error_line(
        invoke("export", "--model", two, "--format", "onnx"),
        "an embedder has one input and one output, this model has 1 and 2",
    )
    assert not (tmp_path / "g.parquet").exists()


def test_unsafe_and_truncated_model_files_are_named_in_one_line(work, tmp_path):
    inputs = keras.Input((32, 32, 3))
    doubled = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    unsafe = save(keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(doubled)), tmp_path / "lambda.keras")
    one_error_line(
        invoke("embed", work["root"], "--model", unsafe, "-o", tmp_path / "g.parquet"),
        f"{unsafe}: refused: the model holds code (Lambda); ffem loads models in Keras safe mode",
    )
    truncated = tmp_path / "run"
    truncated.mkdir()
    (truncated / "run.toml").write_text((work["run"] / "run.toml").read_text())
    whole = (work["run"] / "embedder.keras").read_bytes()
    (truncated / "embedder.keras").write_bytes(whole[: len(whole) // 2])
    one_error_line(
        invoke("embed", work["root"], "--run", truncated, "-o", tmp_path / "g.parquet"),
        "embedder.keras: not a .keras archive (truncated, or not a Keras model file)",
    )


@pytest.mark.parametrize(
    "line, expected",
    [
        ('image_size = "abc"', "data.image_size must be a positive integer, got 'abc'"),
        ("image_size = 0", "data.image_size must be a positive integer, got 0"),
        ('crop = "circle"', 'data.crop must be "margin" or "align", got \'circle\''),
        ("margin = nan", "data.margin must be a number >= 0, got nan"),
    ],
)
def test_a_bad_run_toml_data_table_is_one_line_for_eval_embed_and_export(work, tmp_path, line, expected):
    run = tmp_path / "run"
    run.mkdir()
    (run / "embedder.keras").write_bytes((work["run"] / "embedder.keras").read_bytes())
    key = line.split()[0]
    text = "\n".join(
        line if row.startswith(f"{key} =") else row for row in (work["run"] / "run.toml").read_text().splitlines()
    )
    (run / "run.toml").write_text(text + "\n")
    one_error_line(invoke("embed", work["root"], "--run", run, "-o", tmp_path / "g.parquet"), expected)
    one_error_line(invoke("eval", "folder", "--run", run, "--root", work["root"]), expected)
    one_error_line(invoke("export", "--run", run, "--format", "onnx"), expected)


def test_unwritable_outputs_are_one_line_before_any_work(work, tmp_path):
    with read_only_folder(tmp_path) as locked:
        why = f"cannot be created, {locked} is not writable (permission denied)"
        one_error_line(invoke("embed", work["root"], "--run", work["run"], "-o", locked / "g.parquet"), why)
        one_error_line(invoke("map", "--gallery", work["gallery"], "-o", locked / "map.png"), why)
        one_error_line(invoke("search", work["query"], "--gallery", work["gallery"], "-o", locked / "s.png"), why)
        one_error_line(
            invoke(
                "eval",
                "folder",
                "--run",
                work["run"],
                "--root",
                work["root"],
                "--output-dir",
                locked / "out",
                "--no-cache",
            ),
            why,
        )
        one_error_line(invoke("export", "--run", work["run"], "-f", "onnx", "-o", locked / "export"), why)
        assert list(locked.iterdir()) == []
