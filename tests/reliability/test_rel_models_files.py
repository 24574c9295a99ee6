"""Damaged and mismatched model files are refused with one clear line; loading never runs code from a file.

The runtime's loader (toolkit.inference.manifest + predictor) is exercised as it is; the export loaders
and Keras loading are the training side's.
"""

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from benchmarks.common import DATA
from benchmarks.modelfiles import sweep
from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.inference.manifest import sha256_file
from toolkit.inference.predictor import Predictor

pytestmark = pytest.mark.slow
TOOLKIT = Path(__file__).resolve().parents[2] / "toolkit"


def test_truncated_and_bit_flipped_model_files(tmp_path, announce, tiny_run, tiny_export):
    sources = [tiny_run / "model.keras", tiny_export / "model.onnx", tiny_export / "model.tflite"]
    for row in sweep(sources, tmp_path, cuts=3, flips=3, seed=1):
        announce(f"damaged .{row['format']}: {row['cases']} files, {row['refused']} refused in one line, "
                 f"{row['loaded']} loaded (bit flips in weights), {row['exception']} escaped, "
                 f"{row['crashed']} crashed")
        assert row["exception"] == row["crashed"] == row["refused-multiline"] == 0, row["examples"]
        assert row["refused"] >= 8  # every truncation and the random junk file


@pytest.mark.parametrize("command", ["export", "predict", "evaluate"])
def test_cli_refuses_a_corrupt_keras_file_in_one_line(command, tmp_path, capsys, tiny_run):
    bad = tmp_path / "model.keras"
    bad.write_bytes((tiny_run / "model.keras").read_bytes()[:5000])
    args = {"export": ["export", str(bad), "--data", DATA, "--out", str(tmp_path / "x")],
            "predict": ["predict", str(bad), str(tmp_path / "img.png")],
            "evaluate": ["evaluate", str(bad), "--data", DATA]}[command]
    rc = main(args)
    text = capsys.readouterr().err
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(errors) == 1 and "not a loadable Keras model" in errors[0], text
    assert "Traceback" not in text and not (tmp_path / "x").exists()


@pytest.fixture
def copied_export(tmp_path, tiny_export) -> Path:
    """A copy of the tiny export that a test may damage."""
    folder = tmp_path / "export"
    shutil.copytree(tiny_export, folder)
    return folder


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _rehash(folder: Path, name: str = "model.onnx") -> None:
    _edit_manifest(folder, lambda m: m["files"][name].update(sha256=sha256_file(folder / name)))


def _refused(folder: Path, match: str) -> None:
    with pytest.raises(ToolkitError, match=match) as info:
        Predictor(folder)
    assert "\n" not in str(info.value)


def test_runtime_accepts_the_untouched_export(copied_export, tmp_path):
    p = Predictor(copied_export)
    assert p.predict(np.zeros((40, 50, 3), np.uint8)).label in p.labels


def test_manifest_hash_mismatch(copied_export, tmp_path):
    folder = copied_export
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"\0")
    _refused(folder, "does not match files")


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(labels=["a", "b", "c"]), "a sigmoid output needs exactly 2 labels"),
    (lambda m: m.update(output_kind="softmax", labels=["a", "b", "c"]), "does not match output_kind"),
    (lambda m: m["input"].update(shape=[None, 64, 64, 3]), "does not match input.shape"),
    (lambda m: m["input"].update(shape=[None, 32, 32]), "input.shape"),
    (lambda m: m["input"].update(name="pixels"), "do not match input.name"),
    (lambda m: m["input"].update(dtype="uint8"), "does not match input.dtype"),
    (lambda m: m.update(schema="toolkit.manifest/0"), "field 'schema'"),
    (lambda m: m.pop("files"), "malformed manifest"),
    (lambda m: m.update(serve="model.tflite"), "runs 'onnx' files only"),
])
def test_manifest_that_does_not_match_its_file(copied_export, tmp_path, edit, match):
    folder = copied_export
    _edit_manifest(folder, edit)
    _refused(folder, match)


def _rename_input(model: onnx.ModelProto, new: str) -> onnx.ModelProto:
    old = model.graph.input[0].name
    model.graph.input[0].name = new
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    return model


def test_onnx_with_an_unexpected_input_name(copied_export, tmp_path):
    folder = copied_export
    onnx.save(_rename_input(onnx.load(folder / "model.onnx"), "input_1"), folder / "model.onnx")
    _rehash(folder)
    _refused(folder, r"inputs \['input_1'\] do not match input.name 'image'")


def test_onnx_with_an_nchw_input(copied_export, tmp_path):
    folder = copied_export
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=0),
         helper.make_node("Reshape", ["m", "shape"], ["probs"])],
        "nchw", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), folder / "model.onnx")
    _rehash(folder)
    _refused(folder, "does not match input.shape")


def test_truncated_onnx_with_a_matching_hash(copied_export, tmp_path):
    folder = copied_export
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 3])
    _rehash(folder)
    _refused(folder, "onnxruntime cannot load it")


def _lambda_model(tmp_path, marker: Path):
    from toolkit._keras import keras

    k = keras()
    inp = k.Input((4,))
    # The layer writes a file whenever it runs: building the model runs it once, so delete the file after.
    path = str(marker)
    x = k.layers.Lambda(lambda t: (open(path, "w").write("ran"), t)[1])(inp)
    model = k.Model(inp, k.layers.Dense(1)(x))
    model.save(tmp_path / "lambda.keras")
    model.save(tmp_path / "lambda.h5")
    marker.unlink()
    return tmp_path / "lambda.keras", tmp_path / "lambda.h5"


def test_a_lambda_layer_is_refused_and_its_code_never_runs(tmp_path):
    from toolkit.train.runs import load_keras_model

    marker = tmp_path / "code-ran"
    keras_file, h5_file = _lambda_model(tmp_path, marker)
    with pytest.raises(ToolkitError, match="Lambda"):
        load_keras_model(keras_file)  # Keras safe_mode
    with pytest.raises(ToolkitError, match="Lambda layer, whose Python code loading would run"):
        load_keras_model(h5_file)  # safe_mode does not cover .h5: checked by the toolkit before Keras reads it
    assert not marker.exists()
    rc = main(["export", str(h5_file), "--data", DATA, "--out", str(tmp_path / "x")])
    assert rc == 2 and not marker.exists()


def test_loading_never_unpickles(tmp_path, monkeypatch, tiny_run, tiny_export):
    from toolkit.export.validate import load_runner
    from toolkit.inference.manifest import load_manifest
    from toolkit.train.runs import load_keras_model

    model = load_keras_model(tiny_run / "model.keras")
    model.save(tmp_path / "model.h5")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used while loading a model file")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    for name in ("load", "loads"):
        monkeypatch.setattr(f"_pickle.{name}", refuse)
    load_keras_model(tiny_run / "model.keras")
    load_keras_model(tmp_path / "model.h5")
    load_manifest(tiny_export)
    Predictor(tiny_export)
    load_runner(tiny_export / "model.tflite")(np.zeros((1, 32, 32, 3), np.float32))


def test_no_unpickling_or_marshal_in_the_toolkit_source():
    pattern = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|marshal|dill|joblib|cloudpickle)\b"
                         r"|allow_pickle\s*=\s*True|pickle\.loads?\(|torch\.load\(", re.MULTILINE)
    hits = [str(p.relative_to(TOOLKIT)) for p in TOOLKIT.rglob("*.py") if pattern.search(p.read_text())]
    assert hits == []
