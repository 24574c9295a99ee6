"""A first run converts third-party ``.tflite`` files (the hand models, the detector) with tf2onnx, then trains in
the same process: the conversion must leave TensorFlow set up for Keras 2, and say nothing on the terminal.

Issue 23, defect 1: with an empty weights cache, ``toolkit finetune hands`` tracked every image and then stopped
with "tensorflow was imported before toolkit._keras" (tf2onnx had imported TensorFlow itself); the second run
worked because the converted files were cached by then.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

MAKE_TFLITE = """
import sys
from pathlib import Path
import numpy as np
from toolkit._keras import keras, tf
from toolkit.export.tflite import convert
from toolkit.export.validate import load_runner
k = keras()
x = k.Input((8, 8, 3))
model = k.Model(x, k.layers.Conv2D(2, 3, padding="same")(x))
open(sys.argv[1], "wb").write(tf().lite.TFLiteConverter.from_keras_model(model).convert())
# an int8 file made and run the way 'make demo' does: the quantizer and the XNNPACK delegate print natively
images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
Path(sys.argv[2]).write_bytes(convert(model, "int8", images))
print("ran", load_runner(Path(sys.argv[2]), threads=1)(images).shape)
"""

CONVERT_THEN_TRAIN = """
import sys
from pathlib import Path
from toolkit.models.tflite import to_onnx
diff = to_onnx(Path(sys.argv[1]), Path(sys.argv[2]), atol=1e-4, value_range=(0.0, 1.0))
from toolkit._keras import keras
keras().Sequential([keras().layers.Dense(1)])  # what finetune hands does next: build its head
print("converted", diff < 1e-4)
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_USE_LEGACY_KERAS", None)  # a fresh shell's environment: nothing set up yet
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_converting_a_tflite_leaves_keras_usable_and_the_terminal_quiet(tmp_path):
    """Defect 1 (and 5: no native noise from the conversions and int8 export either)."""
    tflite, onnx_path = tmp_path / "tiny.tflite", tmp_path / "tiny.onnx"
    made = _python(MAKE_TFLITE, str(tflite), str(tmp_path / "int8.tflite"))
    assert made.returncode == 0, made.stderr[-2000:]
    assert made.stdout.strip() == "ran (4, 8, 8, 2)"
    for noise in ("fully_quantize", "inference_type", "XNNPACK", "cuInit"):  # defect 5: export's native noise
        assert noise not in made.stderr, made.stderr[-2000:]
    run = _python(CONVERT_THEN_TRAIN, str(tflite), str(onnx_path))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "converted True" and onnx_path.is_file()
    for noise in ("tf.lite.Interpreter is deprecated", "cuInit", "XNNPACK", "oneDNN", "Traceback"):
        assert noise not in run.stderr, run.stderr[-2000:]

