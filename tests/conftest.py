"""Helpers every test folder shares, as fixtures, so no test imports a helper module by its bare name.

- ``announce``: print a figure past pytest's capture (the reliability tests report what they measured).
- ``seed``: the seed of randomised tests (fuzzing, kill points): ``$TOOLKIT_TEST_SEED``, else 0. Fixed, so a
  run repeats the last one; set the variable to explore other cases. The tests print it with their figures.
- ``log_lines``: the messages a ``toolkit`` logger emits during the test, through a handler of its own.
- ``mediapipe_wheel``: a minimal fake ``mediapipe==0.10.21`` wheel holding the given members (no network).
- ``tiny_run`` / ``tiny_export`` (once per session): a finished HappyModel run (32x32, 64 synthetic faces,
  2 epochs) and its ONNX + TFLite float export, made on first use.

The door runtime's helper modules (``tests/runtime/runtime_support.py``: tiny ONNX exports, frames, a live
server; ``tests/reliability/door_support.py``) are imported by name from tests/runtime, tests/reliability and
tests/unit; their folders are put on the path here, once. Heavy imports stay inside the fixtures:
``tests/runtime/run_without_tf.sh`` loads this file in a venv without TensorFlow.
"""

from __future__ import annotations

import logging
import os
import sys
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for _folder in (HERE / "runtime", HERE / "reliability"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


@pytest.fixture
def announce(capsys):
    """``announce(text)`` prints a figure so it shows in the test output even though pytest captures output."""

    def say(text: str) -> None:
        with capsys.disabled():
            print(f"\n  [reliability] {text}", flush=True)

    return say


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    """``log_lines(name, level_of=None)`` -> the list of messages logger ``name`` emits from now on, with logger
    ``level_of`` (default: ``name``) at INFO; both undone after the test. A handler of its own, not caplog: once
    the CLI ran in this process the ``toolkit`` logger no longer propagates to the root."""
    undo = []

    def attach(name: str, level_of: str | None = None) -> list[str]:
        logger, leveled, handler = logging.getLogger(name), logging.getLogger(level_of or name), _Lines()
        undo.append((logger, leveled, handler, leveled.level))
        logger.addHandler(handler)
        leveled.setLevel(logging.INFO)
        return handler.lines

    yield attach
    for logger, leveled, handler, level in reversed(undo):
        logger.removeHandler(handler)
        leveled.setLevel(level)


@pytest.fixture
def mediapipe_wheel():
    """``mediapipe_wheel(folder, members, name=...)`` writes a minimal wheel of mediapipe 0.10.21 into ``folder``
    holding ``members`` ({path in the wheel: bytes or text}) and its dist-info; returns its path."""

    def make(folder: Path, members: dict, name: str = "mediapipe-0.10.21-py3-none-any.whl") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path, info = folder / name, "mediapipe-0.10.21.dist-info"
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
            zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: mediapipe\nVersion: 0.10.21\n")
            zf.writestr(f"{info}/WHEEL",
                        "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            zf.writestr(f"{info}/RECORD", "")
        return path

    return make


@pytest.fixture(scope="session")
def seed() -> int:
    """``$TOOLKIT_TEST_SEED`` or 0: randomised tests draw the same cases every run unless told otherwise."""
    return int(os.environ.get("TOOLKIT_TEST_SEED", "0"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished HappyModel run (32x32, 64 synthetic faces, 2 epochs), trained in this process."""
    from benchmarks.common import BATCH, DATA, IMAGE_SIZE
    from toolkit.config import TrainConfig
    from toolkit.train.fit import train

    out = tmp_path_factory.mktemp("rel-train") / "run"
    train(TrainConfig(model="happy", data=DATA, out=str(out), epochs=2, batch_size=BATCH, image_size=IMAGE_SIZE,
                      patience=0))
    return out


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported to ONNX and TFLite (float32), with its manifest."""
    from toolkit.export import ExportConfig, export

    out = tmp_path_factory.mktemp("rel-export") / "exported" / "happy"
    export(ExportConfig(source=str(tiny_run), out=str(out), formats=("onnx", "tflite"), quantize=("none",)),
           log=lambda msg: None)
    return out


@pytest.fixture(autouse=True)
def _no_relay_watchdog_outlives_its_test():
    """A door a test left unlocked arms the relay's watchdog (a threading.Timer); fired during a later test, its
    warning lands in that test's captured stderr. Cancel what a finished test left pending."""
    yield
    import threading

    for thread in threading.enumerate():
        fn = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and getattr(fn, "__name__", "") == "_watchdog":
            thread.cancel()
