"""ffem export: SavedModel, TFLite (fp32, fp16, int8, full int8) and ONNX of a
tiny embedder, their parity with the Keras model, the gate that refuses a
drifting export, metadata, and the one-line errors on bad input."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from ffem_cli.cli import app
from ffem_cli.data.pack import PackSettings, pack
from ffem_cli.export import converters, faces, runtimes
from ffem_cli.inference.embedding import FacePrep
from ffem_cli.models import build_embedder
from ffem_cli.rundir import RunDir

SIZE = 64
EMBEDDING = 32
runner = CliRunner()


def make_run(path: Path, with_embedder: bool = True, seed: int = 0, size: int = SIZE) -> RunDir:
    """A run directory as ``ffem train`` leaves it: embedder.keras + run.toml."""
    run = RunDir(path)
    run.path.mkdir(parents=True, exist_ok=True)
    if with_embedder:
        model = build_embedder("tiny", "gdc", EMBEDDING, size)
        # Batch-norm statistics of real inputs (as after training): with the
        # initial ones every face gets almost the same embedding, and parity
        # would be trivially high.
        batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        for layer in batch_norms:
            layer.momentum = 0.0
        model(
            faces.synthetic_faces(FacePrep(image_size=size), 32, seed=seed).astype("float32"),
            training=True,
        )
        for layer in batch_norms:
            layer.momentum = 0.99
        model.save(run.embedder_path)
    run.write_config(
        {
            "data": {"image_size": size, "crop": "margin", "margin": 0.2},
            "model": {"backbone": "tiny", "pooling": "gdc", "embedding_size": EMBEDDING},
        }
    )
    return run


def invoke(*args: str):
    return runner.invoke(app, ["export", *map(str, args)])


def error_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


@pytest.fixture(scope="module")
def face_pack(synthetic_faces, tmp_path_factory):
    root, image_list = synthetic_faces
    output = tmp_path_factory.mktemp("pack")
    pack(image_list, root, output, PackSettings(image_size=SIZE, shards=2), workers=1)
    return output


@pytest.fixture(scope="module")
def exported(tmp_path_factory, face_pack):
    """One CLI call exporting every format and every TFLite quantization."""
    run = make_run(tmp_path_factory.mktemp("run") / "tiny")
    result = invoke(
        "--run", run.path, "-f", "savedmodel", "-f", "tflite", "-f", "onnx",
        "-q", "none", "-q", "float16", "-q", "int8", "-q", "int8-full",
        "--calibration", face_pack, "--calibration-faces", 24,
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    return run, result


@pytest.fixture(scope="module")
def check_faces():
    """Faces the exporter never saw: synthetic ones with another seed."""
    return faces.synthetic_faces(FacePrep(image_size=SIZE), 16, seed=7)


def cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    return (reference * other).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(other, axis=1)


def keras_embeddings(run: RunDir, images: np.ndarray) -> np.ndarray:
    return np.asarray(run.load_keras_model()(images.astype("float32"), training=False))


def test_every_export_is_written_with_metadata_and_parity(exported):
    run, result = exported
    export_dir = run.export_dir
    names = [
        "saved_model",
        "model.tflite",
        "model-float16.tflite",
        "model-int8.tflite",
        "model-int8-full.tflite",
        "model.onnx",
    ]
    parity = json.loads((export_dir / "parity.json").read_text())["exports"]
    assert sorted(parity) == sorted(names)
    assert leftovers(export_dir) == []
    for name in names:
        meta = json.loads((export_dir / f"{name}.json").read_text())
        assert meta["input"] == {
            "name": "faces", "dtype": "uint8", "shape": [None, SIZE, SIZE, 3], "channel_order": "RGB",
            "value_range": [0, 255], "normalisation": "(x - 127.5) / 128, inside the graph (feed raw pixels)",
        }  # fmt: skip
        assert meta["output"]["shape"] == [None, EMBEDDING]
        assert meta["source"]["backbone"] == "tiny"
        assert meta["source"]["run"] == str(run.path.resolve())
        assert set(meta["versions"]) >= {"ffem", "tensorflow", "keras"}
        assert meta["parity"]["min_cosine"] == parity[name]["min_cosine"]
        assert "pack" in parity[name]["faces_source"]
        if name != "saved_model":
            assert meta["sha256"] == hashlib.sha256((export_dir / name).read_bytes()).hexdigest()
    unquantized = [n for n in names if parity[n]["quantization"] == "none"]
    assert unquantized == ["saved_model", "model.tflite", "model.onnx"]
    for name in unquantized:
        assert parity[name]["min_cosine"] >= 0.9999 and parity[name]["threshold"] == 0.9999
    assert parity["model-float16.tflite"]["min_cosine"] >= 0.999
    assert parity["model-int8-full.tflite"]["threshold"] is None
    assert "calibration" in json.loads((export_dir / "model-int8-full.tflite.json").read_text())["parity"]
    for name in ("model-int8.tflite", "model-int8-full.tflite"):
        assert 0.9 < parity[name]["mean_cosine"] <= 1.0 + 1e-6
    assert "model-int8-full.tflite" in result.stdout and "min cos" in result.stdout


def test_savedmodel_takes_uint8_faces_and_matches_keras(exported, check_faces):
    import tensorflow as tf

    run, _ = exported
    signature = tf.saved_model.load(str(run.export_dir / "saved_model")).signatures["serving_default"]
    spec = signature.structured_input_signature[1]["faces"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, SIZE, SIZE, 3]
    embeddings = signature(faces=tf.constant(check_faces))["embeddings"].numpy()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    reference = keras_embeddings(run, check_faces)
    between_faces = (reference @ reference.T)[np.triu_indices(len(reference), 1)]
    assert between_faces.mean() < 0.5  # faces differ, so a parity of 0.9999 means something
    assert cosines(reference, embeddings).min() >= 0.9999


def test_tflite_interpreter_matches_keras(exported, check_faces):
    run, _ = exported
    reference = keras_embeddings(run, check_faces)
    fp32 = runtimes.tflite_runtime(run.export_dir / "model.tflite", threads=1)(check_faces)
    fp16 = runtimes.tflite_runtime(run.export_dir / "model-float16.tflite")(check_faces)
    int8_full = runtimes.tflite_runtime(run.export_dir / "model-int8-full.tflite")
    assert cosines(reference, fp32).min() >= 0.9999
    assert cosines(reference, fp16).min() >= 0.999
    assert np.all(np.isfinite(int8_full(check_faces)))


def test_full_integer_model_takes_uint8_and_quantizes_inside(exported):
    import tensorflow as tf

    run, _ = exported
    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(run.export_dir / "model-int8-full.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    kinds = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert np.int8 in kinds  # activations and weights are int8 inside


def test_seed_quantization_levels_1_and_2_each_get_a_parity_figure(tmp_path, face_pack, check_faces):
    """The FFEM seed's convert_tflite level 1 (integer with float fallback) and level 2
    (full integer, uint8 in and uint8 out)."""
    import tensorflow as tf

    run = make_run(tmp_path / "levels")
    result = invoke(
        "--run",
        run.path,
        "-f",
        "tflite",
        "-q",
        "int8-fallback",
        "-q",
        "int8-uint8",
        "--calibration",
        face_pack,
        "--calibration-faces",
        24,
    )
    assert result.exit_code == 0, result.output + result.stderr
    parity = json.loads((run.export_dir / "parity.json").read_text())["exports"]
    assert set(parity) == {"model-int8-fallback.tflite", "model-int8-uint8.tflite"}
    for name in parity:
        assert 0.9 < parity[name]["mean_cosine"] <= 1.0 + 1e-6 and parity[name]["threshold"] is None
        assert "calibration" in json.loads((run.export_dir / f"{name}.json").read_text())["parity"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level2 = tf.lite.Interpreter(model_path=str(run.export_dir / "model-int8-uint8.tflite"))
        level1 = tf.lite.Interpreter(model_path=str(run.export_dir / "model-int8-fallback.tflite"))
    assert level2.get_input_details()[0]["dtype"] == np.uint8
    assert level2.get_output_details()[0]["dtype"] == np.uint8
    assert level1.get_output_details()[0]["dtype"] == np.float32
    assert np.int8 in {detail["dtype"] for detail in level1.get_tensor_details()}
    meta = json.loads((run.export_dir / "model-int8-uint8.tflite.json").read_text())
    assert meta["output"]["dtype"] == "uint8" and "dequantize" in meta["output"]
    reference = keras_embeddings(run, check_faces)
    dequantized = runtimes.tflite_runtime(run.export_dir / "model-int8-uint8.tflite")(check_faces)
    assert dequantized.dtype == np.float32 and cosines(reference, dequantized).mean() > 0.9


def test_onnx_runtime_matches_keras(exported, check_faces):
    import onnx

    run, _ = exported
    model = onnx.load(str(run.export_dir / "model.onnx"))
    assert max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    embeddings = runtimes.onnx_runtime(run.export_dir / "model.onnx", threads=1)(check_faces)
    assert cosines(keras_embeddings(run, check_faces), embeddings).min() >= 0.9999


def test_a_drifting_onnx_export_fails_and_is_not_written(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    other = build_embedder("tiny", "gdc", EMBEDDING, SIZE)  # other weights: a broken conversion
    convert = converters.onnx_bytes
    monkeypatch.setattr(converters, "onnx_bytes", lambda model, size: convert(other, size))
    result = invoke("--run", run.path, "-f", "tflite", "-f", "onnx", "--parity-faces", 8)
    assert result.exit_code == 1
    assert error_line(result).startswith("error: model.onnx: parity check failed: min cosine ")
    assert error_line(result).endswith(
        "< 0.9999 against the Keras model on synthetic drawn faces (no pack or images given): 8 faces; "
        "nothing was written under that name"
    )
    export_dir = run.export_dir
    assert not (export_dir / "model.onnx").exists() and not (export_dir / "model.onnx.json").exists()
    assert (export_dir / "model.tflite").is_file()  # the export before it passed and stays
    assert list(json.loads((export_dir / "parity.json").read_text())["exports"]) == ["model.tflite"]
    assert leftovers(export_dir) == []


def test_a_drifting_savedmodel_leaves_no_folder(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    load = runtimes.savedmodel_runtime
    monkeypatch.setattr(runtimes, "savedmodel_runtime", lambda path: lambda x: load(path)(x)[:, ::-1].copy())
    result = invoke("--run", run.path, "-f", "savedmodel", "--parity-faces", 4, "--output", tmp_path / "out")
    assert result.exit_code == 1
    assert "error: saved_model: parity check failed" in error_line(result)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_parity_images_folder_is_cut_with_the_image_list(tmp_path, synthetic_faces, capfd):
    run = make_run(tmp_path / "run")
    root, _ = synthetic_faces
    result = invoke(
        "--run",
        run.path,
        "-f",
        "onnx",
        "--parity-images",
        root,
        "--parity-faces",
        6,
        "-o",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.stderr
    assert capfd.readouterr().out == ""  # no converter chatter reached file descriptor 1
    record = json.loads((tmp_path / "out" / "parity.json").read_text())["exports"]["model.onnx"]
    assert record["faces"] == 6 and record["faces_source"] == f"images in {root}: 6 faces"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "tflit"], "unknown format 'tflit'; choose from: savedmodel, tflite, onnx"),
        (
            ["-q", "int4"],
            "unknown quantization 'int4'; choose from: none, float16, int8, int8-full, int8-fallback, int8-uint8",
        ),
        (["-f", "onnx", "-q", "float16"], "--quantize float16 applies to --format tflite only"),
        (
            ["-f", "tflite", "-q", "int8-full"],
            "--quantize int8-full needs --calibration PACK_DIR (faces to calibrate activation ranges)",
        ),
    ],
)
def test_bad_requests_give_one_line(tmp_path, args, message):
    run = make_run(tmp_path / "run", with_embedder=False)
    result = invoke("--run", run.path, *args)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {message}"
    assert not run.export_dir.exists()


def test_missing_run_or_embedder_or_pack_gives_one_line(tmp_path):
    result = invoke("--run", tmp_path / "nope", "-f", "onnx")
    assert (result.exit_code, result.stderr.strip()) == (
        1,
        f"error: {tmp_path / 'nope'}: no such run directory",
    )
    run = make_run(tmp_path / "run", with_embedder=False)
    result = invoke("--run", run.path, "-f", "onnx")
    assert result.stderr.strip() == f"error: {run.path}: no embedder.keras (has training finished?)"
    run = make_run(tmp_path / "run2")
    result = invoke("--run", run.path, "-f", "tflite", "-q", "int8-full", "--calibration", tmp_path / "nopack")
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'nopack'}: --calibration must be a pack directory (ffem pack output); no such folder"
    )
    result = invoke("-f", "onnx")
    assert result.stderr.strip() == "error: give exactly one of --run RUN_DIR or --model FILE.keras"
    assert not run.export_dir.exists()


def test_model_file_with_conflicting_image_size(tmp_path):
    run = make_run(tmp_path / "run")
    result = invoke("--model", run.embedder_path, "--image-size", 112, "-f", "onnx", "-o", tmp_path / "out")
    assert result.stderr.strip() == (
        f"error: {run.embedder_path}: conflicting input sizes [64, 112] (model input, run.toml data.image_size, --image-size)"
    )


def test_val_pairs_report_accuracy_at_the_keras_threshold(tmp_path, synthetic_faces):
    run = make_run(tmp_path / "run")
    root, _ = synthetic_faces
    lines = [f"1,synthetic_{i}/000.jpg,synthetic_{i}/{j:03d}.jpg" for i in range(6) for j in (1, 2)]
    lines += [f"0,synthetic_{i}/000.jpg,synthetic_{(i + 1) % 6}/{j:03d}.jpg" for i in range(6) for j in (1, 2)]
    pair_list = tmp_path / "pairs.txt"
    pair_list.write_text("\n".join(lines) + "\n")
    result = invoke(
        "--run", run.path, "-f", "tflite", "-q", "none", "-q", "int8", "--parity-faces", 8,
        "--val-pairs", pair_list, "--val-root", root,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "val acc" in result.stdout
    records = json.loads((run.export_dir / "parity.json").read_text())["exports"]
    keras_accuracy = records["model.tflite"]["keras_val_accuracy"]
    assert 0.5 <= keras_accuracy <= 1.0
    assert abs(records["model.tflite"]["val_accuracy"] - keras_accuracy) <= 1 / 24
    assert 0.0 <= records["model-int8.tflite"]["val_accuracy"] <= 1.0
    assert records["model-int8.tflite"]["val_pairs"] == f"{pair_list}: 24 pairs (12 same-person)"


def test_val_pairs_with_a_missing_image_gives_one_line(tmp_path, synthetic_faces):
    run = make_run(tmp_path / "run")
    root, _ = synthetic_faces
    pair_list = tmp_path / "pairs.txt"
    pair_list.write_text("1,synthetic_0/000.jpg,synthetic_0/099.jpg\n0,synthetic_0/000.jpg,synthetic_1/000.jpg\n")
    result = invoke("--run", run.path, "-f", "onnx", "--val-pairs", pair_list, "--val-root", root)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"error: {pair_list}")
    assert "synthetic_0/099.jpg" in result.stderr
    assert not run.export_dir.exists()


def test_calibration_pack_of_another_face_size_is_refused(tmp_path, face_pack):
    run = make_run(tmp_path / "run", size=48)
    result = invoke("--run", run.path, "-f", "tflite", "-q", "int8-full", "--calibration", face_pack)
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: {face_pack}: pack faces are 64x64 but the model takes 48x48")
    assert not run.export_dir.exists()


def test_parity_faces_of_an_aligned_run_from_a_list_without_landmarks_are_margin_crops(tmp_path):
    # The one FacePrep decides this edge case for eval and export alike: the box, cut with the run's margin.
    from PIL import Image

    image = np.zeros((120, 100, 3), np.uint8)
    image[30:70, 20:60] = 255
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "image_list.json").write_text(
        json.dumps({"a.png": {"label": 0, "x1": 20, "y1": 30, "x2": 60, "y2": 70}})
    )
    prep = FacePrep(image_size=32, crop="align", margin=0.25)
    got = faces.folder_faces(tmp_path, prep, 4)
    assert got.shape == (1, 32, 32, 3)
    assert np.array_equal(got[0], FacePrep(image_size=32, crop="margin", margin=0.25).cut(image, (20, 30, 60, 70)))
