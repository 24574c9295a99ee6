"""A pipeline end to end on tiny data: every step, the report, and skipping unchanged steps."""

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit.pipeline import load_pipeline
from toolkit.pipeline.run import run_pipeline

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TINY = ["train.epochs=2", "data.image_size=32", "export.max_drop=100.0", "export.calibration=32",
        "benchmark.threads=[1]", "benchmark.batch=[1, 4]", "benchmark.repeats=5", "benchmark.keras=false"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    p = load_pipeline(ROOT / "pipelines" / "happy.toml", data="synthetic:happy?n=120&seed=2",
                      sets=[*TINY, f"export.out='{tmp / 'exported'}'"])
    return p, tmp, run_pipeline(p, work_root=tmp / "work")


def test_every_step_produces_its_output(done):
    _, tmp, out = done
    files = {f.name for f in out["export"].iterdir()}
    assert {"model.onnx", "model_int8.onnx", "model.tflite", "model_int8.tflite", "manifest.json",
            "benchmark.json", "report.html", "report.md", "far_frr.png", "samples.png"} <= files
    state = json.loads((tmp / "work" / "happy" / "state.json").read_text())
    assert set(state) == {"train", "export", "benchmark"}


def test_report_holds_the_numbers(done):
    _, _, out = done
    manifest = json.loads((out["export"] / "manifest.json").read_text())
    md = (out["export"] / "report.md").read_text()
    html = out["report"].read_text()
    acc = f"{manifest['files']['model_int8.onnx']['validation']['accuracy']:.2f}"
    assert "| model_int8.onnx | onnx | int8 |" in md and acc in md
    assert "data:image/png;base64," in html and "<img" in html and acc in html
    assert "src=\"samples.png\"" not in html  # self-contained: no links to files beside it


def test_rerun_skips_unchanged_steps_and_redoes_changed_ones(done, caplog):
    p, tmp, first = done
    model_mtime = (first["train"] / "model.keras").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="toolkit.pipeline"):
        again = run_pipeline(p, work_root=tmp / "work")
    text = caplog.text
    assert "train: unchanged" in text and "export: unchanged" in text and "benchmark: unchanged" in text
    assert again["train"] == first["train"]
    assert (first["train"] / "model.keras").stat().st_mtime_ns == model_mtime
    changed = load_pipeline(p.path, data="synthetic:happy?n=120&seed=2",
                            sets=[*TINY, "benchmark.enabled=false", "report.enabled=false",
                                  "export.quantize=['none']", f"export.out='{tmp / 'exported2'}'"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="toolkit.pipeline"):
        third = run_pipeline(changed, work_root=tmp / "work")
    assert "train: unchanged" in caplog.text  # same training settings: reused
    assert sorted(f.name for f in third["export"].glob("*.onnx")) == ["model.onnx"]


def test_interrupted_training_step_resumes(tmp_path):
    p = load_pipeline(ROOT / "pipelines" / "happy.toml", data="synthetic:happy?n=120&seed=2",
                      sets=[*TINY, "benchmark.enabled=false", "report.enabled=false", "export.quantize=['none']",
                            "export.formats=['onnx']", f"export.out='{tmp_path / 'exp'}'"])
    out = run_pipeline(p, work_root=tmp_path / "work")
    # Make it look as if the run had died after its first epoch: history cut, model missing, state gone.
    rows = (out["train"] / "history.csv").read_text().splitlines()
    (out["train"] / "history.csv").write_text("\n".join(rows[:2]) + "\n")
    (out["train"] / "model.keras").unlink()
    (tmp_path / "work" / "happy" / "state.json").unlink()
    shutil.rmtree(tmp_path / "exp")
    again = run_pipeline(p, work_root=tmp_path / "work")
    assert again["train"] == out["train"] and (again["train"] / "model.keras").is_file()
    assert (tmp_path / "exp" / "manifest.json").is_file()


def test_report_renders_in_headless_chromium(done, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    _, _, out = done
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = out["report"].resolve().as_uri()
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
                   check=True, capture_output=True, timeout=120)
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not blank: text, tables and charts drawn
    manifest = json.loads((out["export"] / "manifest.json").read_text())
    assert f"{manifest['files']['model.onnx']['validation']['accuracy']:.2f}" in dom
    assert "Pipeline report: happy" in dom
