"""``python -m benchmarks.NAME``: every benchmark answers --help, and a bad flag is one ``error:`` line, exit 2."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
MAINS = ["audit", "door_faults", "door_load", "door_page", "fewshot", "fuzz", "hands", "killer", "scaling",
         "selftest", "train_overhead", "transfer"]


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
