"""The HTTP API on a real uvicorn server (127.0.0.1, free port), driven by httpx and tritonclient."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from runtime_support import LiveServer, frame, jpeg
from tritonclient.utils import InferenceServerException

from toolkit.runtime.core.config import ModelConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.security import load_token
from toolkit.runtime.server import create_app

TOKEN = "correct horse battery staple"


class FakeDoor:
    """Stands in for the camera loop: readiness and manual unlock only."""

    def __init__(self) -> None:
        self.listeners: list = []
        self.opened = 0
        self.ok = True

    def ready(self):
        return (True, "camera fresh") if self.ok else (False, "no frame for 3.0 s: locked")

    def manual_open(self) -> dict:
        self.opened += 1
        return {"state": "open", "seconds": 3.0}


@pytest.fixture(scope="module")
def door():
    return FakeDoor()


@pytest.fixture(scope="module")
def server(export_dir, door):
    holder = ModelHolder(ModelConfig(export_dir))
    app = create_app(holder, ServeConfig(max_body_bytes=200_000, max_batch=4), door=door, token=TOKEN)
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def test_predict_raw_and_multipart(client, door):
    opened = door.opened
    happy = client.post("/predict", content=jpeg(220), headers={"content-type": "image/jpeg"})
    assert happy.status_code == 200
    body = happy.json()
    assert body["label"] == "smile" and body["decision"] is True and body["threshold"] == 0.5
    assert body["probability"] > 0.9 and body["latency_ms"] > 0 and body["model"] == "tiny"
    sad = client.post("/predict", files={"file": ("x.png", jpeg(30, fmt="PNG"), "image/png")})
    assert sad.status_code == 200 and sad.json()["label"] == "no_smile"
    assert door.opened == opened  # /predict never moves the door


@pytest.mark.parametrize(
    "content, status, message",
    [
        (b"", 400, "empty file"),
        (b"GIF89a not really", 400, "not a readable image"),
        (jpeg(200)[:300], 400, "truncated|not a readable"),
        (b"x" * 300_000, 413, "exceeds 200,000 bytes"),
    ],
)
def test_predict_bad_input_is_a_json_4xx(client, content, status, message):
    r = client.post("/predict", content=content)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] and __import__("re").search(message, r.json()["error"])
    assert client.get("/v2/health/live").status_code == 200  # still up


def test_decompression_bomb_and_chunked_body(client):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buf, format="PNG")  # 36 MP of zeros compresses to ~35 kB
    r = client.post("/predict", content=buf.getvalue())
    assert r.status_code == 400 and "exceeds the limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(30):
            yield b"x" * 10_000

    r = client.post("/predict", content=chunks())
    assert r.status_code == 413
    r = client.post("/predict", files={"other": ("", b"")}, data={"note": "no file"})
    assert r.status_code == 400 and "no file" in r.json()["error"]


def test_v2_with_tritonclient(server):
    c = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("tiny")
    meta = c.get_model_metadata("tiny")
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 64, 64, 3]}
    x = np.stack([frame(220, (64, 64)), frame(30, (64, 64))]).astype(np.float32)
    for binary in (True, False):
        inp = triton.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [triton.InferRequestedOutput("prob", binary_data=binary)]
        probs = c.infer("tiny", [inp], outputs=outputs, request_id="r1").as_numpy("prob")
        assert probs.shape == (2, 1) and probs[0, 0] > 0.9 and probs[1, 0] < 0.1
    probs = c.infer("tiny", [inp]).as_numpy("prob")  # no outputs named: binary by default
    assert probs.shape == (2, 1)
    assert c.infer("tiny", [inp], model_version="1").as_numpy("prob").shape == (2, 1)
    assert c.get_model_metadata("tiny", "1")["versions"] == ["1"]
    assert c.is_model_ready("tiny", "1") and not c.is_model_ready("tiny", "2") and not c.is_model_ready("other")


@pytest.mark.parametrize(
    "name, shape, dtype, data_fn, message",
    [
        ("pixels", [1, 64, 64, 3], "FP32", None, "unknown; this model's input is 'image'"),
        ("image", [1, 32, 32, 3], "FP32", None, "must be \\[N, 64, 64, 3\\]"),
        ("image", [1, 64, 64, 3], "INT8", None, "datatype 'INT8' is not supported"),
        ("image", [1, 64, 64, 3], "FP32", lambda a: a.__setitem__((0, 0, 0, 0), np.nan), "NaN"),
        ("image", [1, 64, 64, 3], "FP32", lambda a: a.__setitem__((0, 0, 0, 0), 1e6), "0..255"),
    ],
)
def test_v2_bad_tensors_with_tritonclient(server, name, shape, dtype, data_fn, message):
    c = triton.InferenceServerClient(server.url.removeprefix("http://"))
    np_dtype = {"FP32": np.float32, "INT8": np.int8}[dtype]
    x = np.full(shape, 100, dtype=np_dtype)
    if data_fn:
        data_fn(x)
    inp = triton.InferInput(name, shape, dtype)
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match=message) as info:
        c.infer("tiny", [inp])
    assert info.value.status() == "400"
    with pytest.raises(InferenceServerException, match="not found"):
        c.get_model_metadata("nope")
    assert c.is_server_live()


def test_v2_json_errors(client):
    good = {"name": "image", "shape": [1, 64, 64, 3], "datatype": "FP32", "data": [1.0] * (64 * 64 * 3)}
    cases = [
        (b"{not json", "not JSON"),
        (json.dumps({"inputs": [{**good, "data": [1.0] * 5}]}), "has 5 values"),
        (json.dumps({"inputs": [{**good, "data": [[1, 2], [3]]}]}), "ragged"),
        (json.dumps({"inputs": [{**good, "data": ["a"] * (64 * 64 * 3)}]}), "only numbers"),
        (json.dumps({"inputs": [{**good, "shape": [9, 64, 64, 3]}]}), "1 <= N <= 4"),
        (json.dumps({"inputs": [good], "outputs": [{"name": "logits"}]}), "output is 'prob'"),
        (json.dumps({"inputs": []}), "exactly one tensor"),
        (
            '{"inputs": [{"name": "image", "shape": [1,64,64,3], "datatype": "FP32", "data": [NaN]}]}',
            "values|NaN",
        ),
    ]
    for body, message in cases:
        r = client.post("/v2/models/tiny/infer", content=body)
        assert r.status_code == 400, (body[:80], r.text)
        assert message.split("|")[0] in r.json()["error"] or message.split("|")[-1] in r.json()["error"]
    ok = client.post("/v2/models/tiny/infer", json={"id": "7", "inputs": [good]})
    assert ok.status_code == 200 and ok.json()["id"] == "7" and ok.json()["outputs"][0]["shape"] == [1, 1]


def test_large_v2_bodies_are_parsed_off_the_event_loop(client, monkeypatch):
    from toolkit.runtime.routes import inference

    on_loop = []

    def parse(*args):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread has no running event loop
            on_loop.append(False)
        return real(*args)

    real = inference.parse_infer_request
    monkeypatch.setattr(inference, "parse_infer_request", parse)
    image = {"name": "image", "datatype": "FP32"}
    small = {"inputs": [{**image, "shape": [1, 64, 64, 3], "data": [1.0] * (64 * 64 * 3)}]}
    large = {"inputs": [{**image, "shape": [2, 64, 64, 3], "data": [1.0] * (2 * 64 * 64 * 3)}]}
    sizes = [len(json.dumps(body)) for body in (small, large)]
    assert sizes[0] <= inference.PARSE_INLINE < sizes[1]
    for body in (small, large):
        assert client.post("/v2/models/tiny/infer", json=body).status_code == 200
    assert on_loop == [True, False]  # ~10 ms a MB: a large body parsed inline would hold every page and unlock


def test_manual_unlock_needs_the_token(client, door):
    before = door.opened
    assert client.post("/door/open").status_code == 401
    r = client.post("/door/open", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert door.opened == before
    r = client.post("/door/open", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["state"] == "open" and door.opened == before + 1


def test_manual_unlock_refused_without_token(export_dir):
    app = create_app(ModelHolder(ModelConfig(export_dir)), ServeConfig(), door=FakeDoor(), token=None)
    with LiveServer(app) as live:
        r = httpx.post(f"{live.url}/door/open", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "TOOLKIT_DOOR_TOKEN" in r.json()["error"]


def test_load_token(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_DOOR_TOKEN", " env-token\n")
    assert load_token(ServeConfig()) == "env-token"
    (tmp_path / "tok").write_text("file-token\n")
    assert load_token(ServeConfig(token_file=tmp_path / "tok")) == "file-token"
    monkeypatch.delenv("TOOLKIT_DOOR_TOKEN")
    assert load_token(ServeConfig()) is None
    with pytest.raises(Exception, match="cannot read the token file"):
        load_token(ServeConfig(token_file=tmp_path / "missing"))


def test_ready_follows_the_door_and_metrics(client, door):
    door.ok = False
    try:
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json()["ready"] is False and "locked" in r.json()["reason"]
    finally:
        door.ok = True
    assert client.get("/v2/health/ready").status_code == 200
    text = client.get("/metrics").text
    assert 'toolkit_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert "toolkit_http_request_seconds_bucket" in text and "toolkit_http_errors_total" in text
    assert "toolkit_door_events_total" in text or "toolkit_door_events" in text
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/door/open", "/v2/models/{name}/infer", "/metrics"} <= set(spec["paths"])
