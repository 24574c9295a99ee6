"""``toolkit data synth`` and ``toolkit data inspect``: outputs, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit.cli import main
from toolkit.data import load_data


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "inspect", "/nonexistent/faces"], "/nonexistent/faces does not exist"),
        (["data", "inspect", "synthetic:faces"], "unknown synthetic task"),
        (["data", "inspect", "synthetic:happy?count=3"], "unknown option 'count'"),
        (["data", "synth", "faces", "--out", "{tmp}/out"], "unknown synthetic task"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_empty_folder_error(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path)]) == 2
    assert "no class sub-folders" in _error_line(capsys)


def test_synth_writes_a_folder_that_loads_back_identically(tmp_path, capsys):
    out = tmp_path / "happy"
    assert (
        main(["data", "synth", "happy", "--out", str(out), "--count", "10", "--seed", "3", "--image-size", "32"]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["no_smile", "smile"]
    assert len(list(out.glob("*/*.png"))) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder renamed away
    back = load_data(str(out), 32).split(val=0, test=0).train.numpy()
    direct = load_data("synthetic:happy?n=10&seed=3", 32).split(val=0, test=0).train.numpy()
    # Same images and labels; the folder lists them class by class, so compare as sorted sets.
    key = lambda xy: sorted((int(label), img.tobytes()) for img, label in zip(*xy, strict=True))  # noqa: E731
    assert key(back) == key(direct)
    capsys.readouterr()
    assert main(["data", "synth", "happy", "--out", str(out), "--count", "10"]) == 2
    assert "already exists and is not empty" in _error_line(capsys)


def test_inspect_prints_the_report_and_writes_a_grid(tmp_path, capsys):
    root = tmp_path / "d"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i + (name == "b"), np.uint8)).save(
                root / name / f"{i}.png"
            )
    (root / "b" / "copy.png").write_bytes((root / "a" / "0.png").read_bytes())
    (root / "b" / "broken.jpg").write_bytes(b"")
    grid = tmp_path / "grid.png"
    assert main(["data", "inspect", str(root), "--image-size", "16", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "images: 7 in 2 classes" in out
    assert "label conflicts (same image, different labels): 1" in out
    assert "a/0.png = b/copy.png" in out
    assert "b/broken.jpg: empty file" in out
    assert Image.open(grid).size[1] == 2 * (16 + 2)
    assert main(["data", "inspect", str(root), "--strict"]) == 2
    assert "broken.jpg" in _error_line(capsys)


def test_installed_command_reports_a_missing_path_without_traceback():
    exe = Path(sys.executable).parent / "toolkit"
    proc = subprocess.run([str(exe), "data", "inspect", "/nonexistent"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr
