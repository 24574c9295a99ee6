"""The runtime never imports TensorFlow, and its core needs only numpy, onnxruntime and Pillow."""

from __future__ import annotations

import subprocess
import sys

TRAINING = "tensorflow tf_keras keras tf2onnx tensorflow_model_optimization toolkit._keras".split()
DOOR_EXTRAS = "fastapi starlette uvicorn cv2 gpiozero prometheus_client".split()


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_runtime_and_door_cli_import_no_tensorflow():
    code = (
        "import toolkit.runtime, toolkit.inference.predictor, toolkit.runtime.server, toolkit.runtime.door, "
        "toolkit.runtime.camera, toolkit.runtime.actuator, toolkit.runtime.service, toolkit.runtime.bench, "
        "toolkit.runtime.collect, toolkit.cli.door"
    )
    loaded = _modules_after(code)
    assert "toolkit.runtime.server" in loaded  # the probe really imported the modules
    assert not {m for m in loaded if m.split(".")[0] in TRAINING or m in TRAINING}


def test_predictor_needs_only_numpy_onnxruntime_pillow():
    loaded = _modules_after("from toolkit.inference.predictor import Predictor")
    assert {"numpy", "onnxruntime", "PIL"} <= {m.split(".")[0] for m in loaded}
    assert not {m for m in loaded if m.split(".")[0] in DOOR_EXTRAS + TRAINING}


def test_door_help_loads_no_runtime_heavyweights():
    loaded = _modules_after(
        "from toolkit.cli import main\ntry:\n    main(['door', '--help'])\nexcept SystemExit:\n    pass"
    )
    assert "toolkit.cli.door" in loaded
    heavy = {m for m in loaded if m.split(".")[0] in DOOR_EXTRAS + ["onnxruntime", "tensorflow"]}
    assert not heavy


def test_import_linter_contracts_hold():
    from pathlib import Path

    import pytest

    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.exists():
        pytest.skip("import-linter is not installed (dev extra)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([str(exe)], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:]
    assert "The exported format and the door's core need none of the door extras KEPT" in out.stdout
