"""Which runtime serves MediaPipe's models: LiteRT (ai-edge-litert, XNNPACK) on their own ``.tflite`` files, or
onnxruntime on the ONNX conversions.

The palm detector, the hand and face landmark models and BlazeFace come from MediaPipe as ``.tflite`` files; the
toolkit converts each to ONNX once (:mod:`toolkit.models.tflite`, checked against the ``.tflite``) and every
export carries the ONNX. XNNPACK, the engine LiteRT and MediaPipe itself run these files with, is faster on them
than onnxruntime (measured in docs/hand-landmarks.md, "Runtime": the face mesh 1.5x, the palm detector 1.2x,
BlazeFace 1.1x, the hand landmarks the same). So an export also carries each model's ``.tflite`` (its "twin",
sha256 in the manifest beside the ONNX's), and the door runs the twin when ai-edge-litert is installed
(``.[door]`` installs it, on aarch64 too). The heads stay ONNX: they are the toolkit's own.

``TOOLKIT_RUNTIME`` chooses: ``auto`` (the default: the twin under LiteRT when both are there, else the ONNX
under onnxruntime), ``onnxruntime`` (always the ONNX), ``litert`` (the twin, or a one-line error naming what is
missing). Training and an export's features are computed with the same choice (the weights cache holds the
``.tflite`` files beside the ONNX), so a head is fitted on the numbers the door computes; the two runtimes' outputs
differ by ~1e-6 (tests/runtime/test_runtime_litert.py, ``python -m benchmarks.runtimes``).

:class:`LiteSession` puts a ``.tflite`` behind the part of ``onnxruntime.InferenceSession`` the chains use
(``get_inputs``, ``get_outputs``, ``run``). An interpreter is not thread-safe; the session keeps a small pool,
one interpreter per concurrent caller (the door's loop and an upload to ``/predict`` may run at once).
"""

from __future__ import annotations

import contextlib
import os
import queue
from pathlib import Path
from typing import NamedTuple

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.native import quiet_native_stderr

RUNTIME_ENV = "TOOLKIT_RUNTIME"
RUNTIMES = ("auto", "onnxruntime", "litert")


class Arg(NamedTuple):
    """An input or output as onnxruntime describes one (name, shape, type)."""

    name: str
    shape: list
    type: str


def litert_available() -> bool:
    """Whether ai-edge-litert can be imported here."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def runtime_setting() -> str:
    """``TOOLKIT_RUNTIME`` (default ``auto``), checked.

    Raises:
        ToolkitError: any other value.
    """
    value = os.environ.get(RUNTIME_ENV, "auto").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ToolkitError(f"{RUNTIME_ENV}={value!r}: expected one of {', '.join(RUNTIMES)}")
    return value


def choose(twin: Path | None, what: str, mediapipe: bool = True) -> str:
    """``litert`` or ``onnxruntime`` for a model whose ``.tflite`` twin is ``twin`` (None: it has none).

    ``mediapipe``: the model is one of MediaPipe's (it has a ``.tflite`` somewhere); False for models that only
    exist as ONNX (the expression CNN), which run under onnxruntime whatever the setting.

    Raises:
        ToolkitError: ``TOOLKIT_RUNTIME=litert`` and the twin or ai-edge-litert is missing.
    """
    setting = runtime_setting()
    if setting == "onnxruntime" or not mediapipe:
        return "onnxruntime"
    has_twin = twin is not None and Path(twin).is_file()
    if setting == "litert":
        if not has_twin:
            raise ToolkitError(f"{what}: {RUNTIME_ENV}=litert but the export has no .tflite for it (made before "
                               "exports carried them, or a pixel export's detector); re-run 'toolkit export' or "
                               f"set {RUNTIME_ENV}=auto")
        if not litert_available():
            raise ToolkitError(f"{RUNTIME_ENV}=litert but ai-edge-litert is not installed; pip install "
                               "'door-camera-toolkit[door]' or unset it")
        return "litert"
    return "litert" if has_twin and litert_available() else "onnxruntime"


class LiteSession:
    """A ``.tflite`` file under LiteRT, called as an onnxruntime session is (one float input, named outputs).

    Args:
        path: the ``.tflite`` file.
        threads: interpreter threads (1 at the door).

    Raises:
        ToolkitError: LiteRT cannot load the file.
    """

    runtime = "litert"

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = Path(path)
        self._threads = max(1, int(threads))
        try:
            self._content = self.path.read_bytes()
            first = self._interpreter()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad files
            raise ToolkitError(f"{self.path}: LiteRT cannot load it ({str(exc).splitlines()[0][:200]}); "
                               f"re-run 'toolkit export' or set {RUNTIME_ENV}=onnxruntime") from exc
        ins, outs = first.get_input_details(), first.get_output_details()
        self._inputs = [Arg(d["name"], [int(v) for v in d["shape"]], _type(d["dtype"])) for d in ins]
        self._outputs = [Arg(d["name"], [int(v) for v in d["shape"]], _type(d["dtype"])) for d in outs]
        self._in = {d["name"]: (d["index"], d["dtype"]) for d in ins}
        self._out = {d["name"]: d["index"] for d in outs}
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        self._pool.put(first)

    def _interpreter(self):
        from ai_edge_litert.interpreter import Interpreter

        global _ANNOUNCED
        # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" once a process: around the first interpreter
        quiet = contextlib.nullcontext() if _ANNOUNCED else quiet_native_stderr()
        _ANNOUNCED = True
        with quiet:
            interpreter = Interpreter(model_content=self._content, num_threads=self._threads)
            interpreter.allocate_tensors()
        return interpreter

    def get_inputs(self) -> list[Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[Arg]:
        return list(self._outputs)

    def run(self, output_names, feeds: dict) -> list[np.ndarray]:
        """The outputs named (None: all, in the model's order) for ``feeds`` ({input name: array})."""
        try:
            interpreter = self._pool.get_nowait()
        except queue.Empty:  # another thread holds the others: one more interpreter, kept for next time
            interpreter = self._interpreter()
        try:
            for name, value in feeds.items():
                index, dtype = self._in[name]
                interpreter.set_tensor(index, np.ascontiguousarray(value, dtype=dtype))
            interpreter.invoke()
            names = output_names or [o.name for o in self._outputs]
            return [interpreter.get_tensor(self._out[n]) for n in names]
        finally:
            self._pool.put(interpreter)


_ANNOUNCED = False  # whether LiteRT has printed its one start-up line in this process


def _type(dtype) -> str:
    return {"float32": "tensor(float)", "uint8": "tensor(uint8)", "int8": "tensor(int8)"}.get(
        np.dtype(dtype).name, f"tensor({np.dtype(dtype).name})")


def export_twins(folder: str | Path, record: dict, where: str | Path, field: str) -> dict:
    """{role: path} of the ``.tflite`` twins an export's ``field`` record lists (``tflite``), each checked against
    the record's ``sha256`` (an export from before the twins lists none: {}).

    Raises:
        ToolkitError: a listed twin is missing or changed after export (the door does not guess).
    """
    from toolkit.inference.manifest import sha256_file

    listed = record.get("tflite") or {}
    if not isinstance(listed, dict):
        raise ToolkitError(f"{where}: field '{field}.tflite' must map model roles to file names; re-run 'toolkit "
                           "export'")
    out = {}
    for role, name in listed.items():
        path = Path(folder) / str(name)
        if not path.is_file():
            raise ToolkitError(f"{path}: the {role} model's .tflite listed in {field}.tflite is missing; re-run "
                               "'toolkit export'")
        if sha256_file(path) != (record.get("sha256") or {}).get(name):
            raise ToolkitError(f"{path}: sha256 does not match {field}.sha256 in {where}; the file changed after "
                               "export, re-run 'toolkit export'")
        out[role] = path
    return out


def open_model(path: str | Path, threads: int, what: str, twin: str | Path | None = None, mediapipe: bool = True):
    """The session a chain runs one model with: the twin under LiteRT or the ONNX under onnxruntime
    (:func:`choose`; ``mediapipe`` False: an ONNX-only model). The session's ``runtime`` attribute says which.

    Raises:
        ToolkitError: the ONNX (or the twin chosen) is missing or cannot be loaded.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: {what} file not found; fetch the models first ('toolkit export' does)")
    if choose(Path(twin) if twin is not None else None, f"{path}", mediapipe) == "litert":
        return LiteSession(twin, threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ToolkitError(f"{path}: cannot load the {what} ({str(exc).splitlines()[0][:200]})") from exc
    session.runtime = "onnxruntime"  # a plain Python object: the chains and the door report it
    return session
