"""Helpers for the runtime tests: tiny ONNX models and export folders (onnx helper API, no TensorFlow).

A module of its own (not conftest.py) so ``from runtime_support import ...`` cannot pick up another
folder's conftest module.

The sigmoid model's probability is sigmoid((mean brightness of the centre - 128) / 20), so a bright
image is "smile" (p ~ 0.98) and a dark one is "no_smile" (p ~ 0.01): tests craft happy and unhappy
frames by brightness. The softmax model returns softmax of the per-channel means / 20.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

from toolkit.inference.manifest import FileEntry, InputSpec, Manifest, sha256_file

SIZE = 64


def build_sigmoid_onnx(path: Path, size: int = SIZE, input_name: str = "image") -> Path:
    """Centre-region mean brightness → sigmoid, output (N, 1)."""
    q = size // 4
    nodes = [
        helper.make_node("Slice", [input_name, "starts", "ends", "axes"], ["centre"]),
        helper.make_node("ReduceMean", ["centre"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sub", ["mean", "mid"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
        helper.make_node("Unsqueeze", ["p", "one"], ["prob"]),
    ]
    inits = [
        helper.make_tensor("starts", TensorProto.INT64, [2], [q, q]),
        helper.make_tensor("ends", TensorProto.INT64, [2], [size - q, size - q]),
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("mid", TensorProto.FLOAT, [], [128.0]),
        helper.make_tensor("scale", TensorProto.FLOAT, [], [20.0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
    ]
    return _save(path, nodes, inits, input_name, size, ["N", 1])


def build_softmax_onnx(path: Path, size: int = SIZE, input_name: str = "image") -> Path:
    """Per-channel mean / 20 → softmax over 3 classes, output (N, 3)."""
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["means"], axes=[1, 2], keepdims=0),
        helper.make_node("Div", ["means", "scale"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=-1),
    ]
    inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [20.0])]
    return _save(path, nodes, inits, input_name, size, ["N", 3])


def _save(path, nodes, inits, input_name, size, out_shape) -> Path:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="toolkit-tests")
    model.ir_version = 8  # old enough for any onnxruntime >= 1.20
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def make_export(folder: Path, kind: str = "sigmoid", threshold: float | None = 0.5, name: str = "tiny") -> Path:
    """Write an export folder (model.onnx + manifest.json) the way ``toolkit export`` does."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    if kind == "sigmoid":
        build_sigmoid_onnx(onnx_path)
        labels = ("no_smile", "smile")
    else:
        build_softmax_onnx(onnx_path)
        labels = ("red", "green", "blue")
    entry = FileEntry(
        format="onnx",
        quantization="none",
        sha256=sha256_file(onnx_path),
        bytes=onnx_path.stat().st_size,
        threshold=threshold if kind == "sigmoid" else None,
    )
    Manifest(
        name=name,
        model="tiny",
        labels=labels,
        input=InputSpec(shape=(None, SIZE, SIZE, 3)),
        output_kind=kind,
        files={"model.onnx": entry},
        serve="model.onnx",
    ).write(folder)
    return folder


def frame(value: int, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    """A uniform RGB frame: value 220 → happy, 40 → unhappy for the sigmoid model."""
    return np.full((*size, 3), value, dtype=np.uint8)


def jpeg(value: int, size: tuple[int, int] = (96, 128), fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame(value, size)).save(buf, format=fmt)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reply:
    """An HTTP answer: status_code, headers (lower-case names), content, text, json()."""

    def __init__(self, status: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def http_request(method: str, url: str, content: bytes = b"", headers: dict | None = None,
                 timeout: float = 10) -> Reply:
    """One request with the standard library (a door install has no httpx); straight to the host, no proxy."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=content,
                     headers=headers or {})
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def http_get(url: str, **kw) -> Reply:
    return http_request("GET", url, **kw)


def http_post(url: str, content: bytes = b"", **kw) -> Reply:
    return http_request("POST", url, content, **kw)


class LiveServer:
    """A real uvicorn server on 127.0.0.1 in a thread (uvicorn installs no signal handlers off-main)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(self.uvicorn_config(app))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def uvicorn_config(self, app):
        import uvicorn

        return uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")


FACE_ANCHOR = 512 + (4 * 8 + 4) * 6  # first anchor of cell (4, 4) of the 8x8 map: centre (0.5625, 0.5625)


def build_fake_detector(path, box_px: float = 64.0):
    """A BlazeFace-shaped ONNX: one face (box_px wide, at FACE_ANCHOR) when the input is bright on average.

    logit[FACE_ANCHOR] = 20 * mean(input in [-1, 1]); every other anchor -20. A white square frame scores
    20 (a face); a black one -20 (none). Regressors are constant: a box_px square centred on the anchor.
    """
    w = np.zeros((1, 896, 1), np.float32)
    b = np.full((1, 896, 1), -20.0, np.float32)
    w[0, FACE_ANCHOR, 0], b[0, FACE_ANCHOR, 0] = 20.0, 0.0
    reg = np.zeros((1, 896, 16), np.float32)
    reg[0, FACE_ANCHOR, 2:4] = box_px
    reg[0, FACE_ANCHOR, 4:] = np.tile([-10.0, -10.0], 6)  # keypoints 10 px up-left of the centre
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "w"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b"], ["classificators"]),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "reg"], ["regressors"]),
    ]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel()) for n, a in
             (("w", w), ("b", b), ("reg", reg), ("zero", np.zeros((1, 896, 16), np.float32)))]  # fmt: skip
    graph = helper.make_graph(
        nodes, "fake_blazeface",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 128, 128, 3])],
        [helper.make_tensor_value_info("regressors", TensorProto.FLOAT, [1, 896, 16]),
         helper.make_tensor_value_info("classificators", TensorProto.FLOAT, [1, 896, 1])],
        initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def door_frames(folder: Path, count: int = 12, size: tuple[int, int] = (240, 320)) -> Path:
    """A folder camera for the page tests: happy faces, unhappy faces (bright around a dark centre), no face.

    With :func:`build_fake_detector` a bright frame has a face; with the sigmoid model its centre decides.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        kind = i % 4
        img = frame(220 if kind in (0, 1) else 230 if kind == 2 else 30, size)
        if kind == 2:
            h, w = size
            img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 60  # still a face (bright on average), scored unhappy
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


@contextmanager
def running_door(tmp_path: Path, export_dir: Path, token: str, fps: float = 20.0, **door):
    """A door loop on a looping folder camera with a log relay, the fake face detector and its API served.

    Yields (LiveServer, DoorLoop); the loop and the server stop on exit.
    """
    from toolkit.inference.detect import FaceDetector
    from toolkit.runtime.actuator import LogActuator
    from toolkit.runtime.camera import open_source
    from toolkit.runtime.core.config import DoorConfig, ModelConfig, PolicyConfig, ServeConfig
    from toolkit.runtime.core.holder import ModelHolder
    from toolkit.runtime.door import DoorLoop
    from toolkit.runtime.server import create_app

    cam = door_frames(tmp_path / "camera")
    detector = FaceDetector(build_fake_detector(tmp_path / "detector.onnx"))
    config = DoorConfig(camera=str(cam), policy=PolicyConfig(k=2, n=3, open_seconds=0.5, cooldown_seconds=0.5),
                        fps=fps, loop=True, snapshots=tmp_path / "snapshots", **door)  # fmt: skip
    holder = ModelHolder(ModelConfig(export_dir))
    loop = DoorLoop(holder, open_source(str(cam), loop=True), config, LogActuator(), cropper=detector)
    with serving(loop, create_app(holder, ServeConfig(), door=loop, token=token)) as live:
        yield live, loop


@contextmanager
def serving(loop, app):
    """``loop`` running in a thread and ``app`` served on 127.0.0.1; yields the LiveServer. On exit the loop
    stops and closes, then the server."""
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    with LiveServer(app) as live:
        thread.start()
        try:
            yield live
        finally:
            stop.set()
            thread.join(timeout=10)
            loop.close()


def wait_for(check, seconds: float = 10.0, every: float = 0.1):
    """``check()``'s first truthy value, polled every ``every`` s; AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")
