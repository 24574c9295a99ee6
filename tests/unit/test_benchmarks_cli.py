"""``python -m benchmarks.NAME``: every benchmark answers --help, and a bad flag is one ``error:`` line, exit 2."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
MAINS = ["audit", "door_faults", "door_load", "door_page", "fewshot", "fuzz", "hands", "int8", "killer",
         "scaling", "selftest", "train_overhead", "transfer"]


@pytest.mark.parametrize("name", MAINS)
def test_help_and_an_unknown_flag(name, capsys):
    main = importlib.import_module(f"benchmarks.{name}").main
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and f"python -m benchmarks.{name}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--no-such-flag"])
    err = capsys.readouterr().err.splitlines()
    assert done.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and f"(see 'python -m benchmarks.{name} --help')" in err[0]


@pytest.mark.parametrize("name, argv, message", [
    ("selftest", ["--only", "interrupt,nope"], "--only: unknown section 'nope'"),
    ("scaling", ["--batch-size", "0"], "argument --batch-size: '0': must be more than 0"),
    ("scaling", ["--workers", "2"], "unrecognized arguments: --workers"),  # a host list elsewhere: --processes
    ("train_overhead", ["--epochs", "abc"], "argument --epochs: 'abc' is not a int"),
    ("transfer", ["speed"], "the following arguments are required: --weights"),
    ("transfer", ["fast"], "argument speed|transfer|memory: invalid choice: 'fast'"),
    ("door_load", ["--model", "m", "--clients", "8,,x"], "argument --clients: '8,,x'"),
    ("fuzz", ["--only", "pixels"], "--only 'pixels': choose from decode, folders, h5"),
    ("fewshot", ["--data", "/nonexistent"], "--data /nonexistent: not a folder"),
    ("int8", ["--runs", "/nonexistent"], "--runs /nonexistent: not a folder"),
    ("int8", ["--quick", "--reuse"], "--reuse needs --out"),
    ("door_page", ["--model", "m", "--pace", "fast"], "argument --pace: invalid choice: 'fast'"),
])  # fmt: skip
def test_bad_values_are_one_line(name, argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        importlib.import_module(f"benchmarks.{name}").main(argv)
    err = capsys.readouterr().err.splitlines()
    assert done.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {message}"), err


def test_a_toolkit_error_is_one_line_from_the_command_line(tmp_path):
    """``python -m`` from a checkout: what the benchmark refuses (here --processes 1) is one line, exit 2."""
    p = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--processes", "1"], cwd=CHECKOUT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.splitlines() == [
        "error: --processes must be at least 2 to compare with one process, got 1"], p.stderr


def test_benchmarks_stay_out_of_the_wheel():
    import tomllib

    setuptools = pytest.importorskip("setuptools")
    find = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = setuptools.find_packages(str(CHECKOUT), include=find["include"])
    assert "toolkit.runtime" in packages  # what the wheel ships...
    assert not [p for p in packages if not p.startswith("toolkit")]  # ...and benchmarks/, tests/ stay in the checkout


def test_int8_table_says_where_each_figure_comes_from_and_what_is_missing():
    from benchmarks.int8 import format_table

    rows = [
        {"model": "r", "format": "onnx", "variant": "float", "accuracy": 96.8, "agreement": 100.0, "max_dp": 0.0,
         "kb": 92000, "p50_ms": 9.9},
        {"model": "r", "format": "onnx", "variant": "int8", "accuracy": 95.7, "agreement": 98.9, "max_dp": 0.16,
         "kb": 23500, "p50_ms": 2.46, "ratio": 0.248, "drop": 1.1, "drop_95": [-0.4, 2.9], "float_layers": "0"},
        {"model": "r", "format": "onnx", "variant": "mixed", "accuracy": 96.8, "drop": 0.0, "drop_95": [-1.0, 1.0],
         "float_layers": "2 of 70", "float_layer_names": ["conv1", "fc"]},
        {"model": "r", "format": "onnx", "variant": "qat", "note": "n/a (not merged)"},
    ]
    sources = [{"run": "/x/r", "spec": "signs/", "split": "test", "n": 186, "fingerprint": "abcdef0123456789",
                "calibration": {"n": 300, "split": "train", "fingerprint": "0123"},
                "mixed_selection": {"onnx": {"split": "val", "n": 186, "sensitivity_images": 64}}}]
    text = format_table(rows, sources)
    assert "| r | onnx | int8 | 95.7 | 98.9 | 0.160 | 23,500 | 2.46 | 0.25 | +1.1 (-0.4 to +2.9) | 0 |" in text
    assert "| r | onnx | qat | n/a (not merged) |" in text and "| 2 of 70 |" in text
    assert "the run's test split (186 images" in text and "int8 calibrated on 300 train images" in text
    assert "onnx mixed-precision layers chosen on the val split (186 images, 64 for the ranking)" in text
    assert "r onnx layers kept float: conv1, fc" in text
