"""`toolkit predict`, `evaluate` and `benchmark` on an export folder: the Pi user's only artefact, no TensorFlow.

The tiny sigmoid export says "smile" for bright images (p ~ 0.98 at 220) and "no_smile" for dark ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image
from runtime_support import frame

from toolkit.cli import main
from toolkit.inference.manifest import load_manifest, sha256_file

ROOT = Path(__file__).resolve().parents[2]
HAPPY = ROOT / "exported" / "happy"
# What a `pip install '.[door]'` lacks; None in sys.modules makes `import x` raise ImportError.
NOT_ON_A_PI = ["tensorflow", "tf_keras", "keras", "h5py", "matplotlib", "onnx", "tf2onnx", "ai_edge_litert", "httpx"]


def _images(folder: Path, classes: dict[str, list[int]]) -> Path:
    for label, values in classes.items():
        (folder / label).mkdir(parents=True)
        for i, v in enumerate(values):
            Image.fromarray(frame(v)).save(folder / label / f"{i:02d}.png")
    return folder


def _with_strict_file(export_dir: Path, tmp_path: Path) -> Path:
    """A copy of the export with a second ONNX file whose manifest threshold (0.99) no image reaches."""
    folder = tmp_path / "two"
    shutil.copytree(export_dir, folder)
    shutil.copy(folder / "model.onnx", folder / "strict.onnx")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["strict.onnx"] = {**manifest["files"]["model.onnx"], "threshold": 0.99,
                                        "sha256": sha256_file(folder / "strict.onnx")}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_predict_runs_the_served_file_or_the_one_picked(export_dir, tmp_path, capsys):
    folder = _with_strict_file(export_dir, tmp_path)
    bright, dark = tmp_path / "bright.png", tmp_path / "dark.png"
    Image.fromarray(frame(200)).save(bright)
    Image.fromarray(frame(40)).save(dark)
    assert main(["predict", str(folder), str(bright), str(dark)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[:2] for r in rows] == [[str(bright), "smile"], [str(dark), "no_smile"]]
    assert float(rows[0][2]) > 0.95 and float(rows[1][2]) > 0.95  # the probability of the label printed
    assert main(["predict", str(folder), str(bright), "--file", "strict.onnx"]) == 0
    assert capsys.readouterr().out.split("\t")[1] == "no_smile"  # p 0.97 < its threshold 0.99


def test_evaluate_prints_the_report_with_the_manifest_threshold(export_dir, tmp_path, capsys):
    data = _images(tmp_path / "faces", {"no_smile": [30, 40, 50, 140], "smile": [200, 220, 240]})
    out = tmp_path / "metrics"
    assert main(["evaluate", str(export_dir), "--data", str(data), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("accuracy 0.8571") and lines[0].endswith("n=7")  # 140 reads as a smile (p 0.65)
    assert lines[2].split() == ["no_smile", "1.000", "0.750", "0.857", "4"]
    assert "confusion (rows true, columns predicted): [[3, 1], [0, 3]]" in lines
    marked = [line for line in lines if "manifest threshold" in line]
    assert len(marked) == 1 and marked[0].split()[:3] == ["0.50", "0.250", "0.000"]
    report = json.loads((out / "metrics.json").read_text())
    assert report["file"] == "model.onnx" and report["threshold"] == 0.5 and report["n"] == 7
    assert not (export_dir / "metrics.json").exists()  # an export folder is never written to unasked


def test_export_folder_mistakes_are_one_line(export_dir, tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(frame(220)).save(img)
    three = _images(tmp_path / "three", {"a": [10], "b": [20], "c": [30]})
    cases = [
        (["evaluate", str(export_dir)], "an export folder holds no test split; pass --data"),
        (["evaluate", str(export_dir), "--data", "synthetic:happy", "--tta"], "--tta needs the Keras model"),
        (["evaluate", str(export_dir), "--data", str(three)], "a, b, c do not match the model's no_smile, smile"),
        (["predict", str(tmp_path), str(img), "--file", "model.onnx"], f"but {tmp_path} has no manifest.json"),
        (["predict", str(export_dir), str(img), "--file", "nope.onnx"], "has no entry 'nope.onnx'"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_benchmark_scores_every_image_of_its_data(export_dir, tmp_path, capsys):
    folder = tmp_path / "bench"
    shutil.copytree(export_dir, folder)
    data = _images(tmp_path / "digits", {"0": [30, 40, 50, 60, 70], "1": [180, 190, 200, 210, 220]})
    argv = ["benchmark", str(folder), "--data", str(data), "--threads", "1", "--batch", "1", "--repeats", "3"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads((folder / "benchmark.json").read_text())
    assert result["n"] == 10 and result["data"] == f"{data}, every image (10 images)"  # no split kept back
    assert [r["accuracy"] for r in result["rows"]] == [100.0]  # folders 0, 1 are no_smile, smile by index
    assert "info: data labels 0, 1 matched to model labels no_smile, smile by index\n" in captured.err
    assert f"scoring on {data}, every image (10 images)" in captured.err
    assert f"Data: {data}, every image (10 images)." in captured.out
    assert "keras baseline skipped: no source run to take it from; add --run RUN" in captured.err  # said, not silent


def test_benchmark_degrade_scores_a_degraded_copy_beside_the_clean_one(export_dir, tmp_path, capsys):
    folder = tmp_path / "bench"
    shutil.copytree(export_dir, folder)
    # brightness just either side of the tiny model's boundary (128): clean, all right; a colour cast flips some
    data = _images(tmp_path / "near", {"0": [112, 116, 120, 124], "1": [132, 136, 140, 144]})
    argv = ["benchmark", str(folder), "--data", str(data), "--threads", "1", "--batch", "1", "--repeats", "3"]
    assert main([*argv, "--degrade"]) == 0
    out = capsys.readouterr().out
    result = json.loads((folder / "benchmark.json").read_text())
    assert result["degraded"] == {"operations": ["colorcast", "lowres", "blur", "jpeg"], "seed": 0}
    [row] = result["rows"]
    assert row["accuracy"] == 100.0 and 0 <= row["degraded_accuracy"] < 100.0
    assert "| acc % | degraded acc % |" in out and f"| {row['degraded_accuracy']:.1f} |" in out
    assert main([*argv, "--degrade"]) == 0  # a fixed seed: the same degraded copy every run
    capsys.readouterr()
    assert json.loads((folder / "benchmark.json").read_text())["rows"][0]["degraded_accuracy"] == row[
        "degraded_accuracy"]
    assert main(argv) == 0  # off by default: no column
    assert "degraded acc" not in capsys.readouterr().out
    result = json.loads((folder / "benchmark.json").read_text())
    assert result["degraded"] is None and result["rows"][0]["degraded_accuracy"] is None


def _door_install(args: list[str]) -> subprocess.CompletedProcess:
    code = (f"import sys\nfor name in {NOT_ON_A_PI!r}:\n    sys.modules[name] = None\n"
            "from toolkit.cli import main\nrc = main(sys.argv[1:])\n"
            "print('loaded:', sorted(m for m in sys.modules if m.startswith('toolkit.train')), file=sys.stderr)\n"
            "sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_committed_export_works_without_tensorflow(tmp_path):
    from toolkit.data import load_data

    x, y = load_data("synthetic:happy?n=2&seed=7", 64).all().numpy()
    face = tmp_path / "face.png"
    Image.fromarray(x[0]).save(face)  # a cartoon: what the real-face model answers is not the point here

    proc = _door_install(["predict", "exported/happy", str(face)])
    assert proc.returncode == 0, proc.stderr
    path, label, probability = proc.stdout.strip().split("\t")
    assert path == str(face) and label in ("no_smile", "smile") and 0.5 <= float(probability) <= 1
    assert "loaded: []" in proc.stderr  # decided before importing the training code

    threshold = load_manifest(HAPPY).files["model.onnx"].threshold
    proc = _door_install(["evaluate", "exported/happy", "--file", "model.onnx", "--data", "synthetic:happy?n=20"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("accuracy ") and f"model.onnx's manifest threshold ({threshold:.4f})" in proc.stdout

    (tmp_path / "test_happy.h5").write_bytes(b"")
    proc = _door_install(["evaluate", "exported/happy", "--data", str(tmp_path / "test_happy.h5")])
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == ("error: reading .h5 files needs h5py: "
                                           "pip install 'door-camera-toolkit[train]'")
