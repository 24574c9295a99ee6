"""Helpers for the training/export/data reliability tests (plain functions, so no conftest is needed).

The tiny run and its export are made once per test process and shared by every module that asks.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from benchmarks.common import BATCH, DATA, IMAGE_SIZE


def announce(capsys, text: str) -> None:
    """Print a figure so it shows in the test output even though pytest captures output."""
    with capsys.disabled():
        print(f"\n  [reliability] {text}", flush=True)


@cache
def _scratch() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="toolkit-rel-train-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@cache
def tiny_run() -> Path:
    """A finished HappyModel run (32x32, 64 synthetic faces, 2 epochs), trained in this process."""
    from toolkit.config import TrainConfig
    from toolkit.train.fit import train

    out = _scratch() / "run"
    train(TrainConfig(model="happy", data=DATA, out=str(out), epochs=2, batch_size=BATCH, image_size=IMAGE_SIZE,
                      patience=0))
    return out


@cache
def tiny_export() -> Path:
    """The tiny run exported to ONNX and TFLite (float32), with its manifest."""
    from toolkit.export import ExportConfig, export

    out = _scratch() / "exported" / "happy"
    export(ExportConfig(source=str(tiny_run()), out=str(out), formats=("onnx", "tflite"), quantize=("none",)),
           log=lambda msg: None)
    return out
