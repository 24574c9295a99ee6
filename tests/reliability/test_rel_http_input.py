"""Hand-written hostile input for the HTTP API: oversize and lying bodies, wrong content types, KServe v2 tensors
that do not match their shape, datatype or contents, NaN/Inf, unknown model names and path traversal. Every
answer is a 4xx (JSON where the app answers), never a 5xx, and the server keeps serving after each one.

Requests go over raw sockets where it matters, so no client normalises the path or fixes the framing."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from door_support import GuardedServer, jpeg, make_export, raw_http
from PIL import Image

from toolkit.runtime.core.config import ModelConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.server import create_app

PIXELS = 64 * 64 * 3
LIMIT = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = ServeConfig(max_body_bytes=LIMIT, max_batch=4, request_timeout_seconds=5)
    folder = make_export(tmp_path_factory.mktemp("input") / "tiny")
    app = create_app(ModelHolder(ModelConfig(folder)), config)
    app.state.folder = folder.resolve()
    with GuardedServer(app, config) as live:
        live.folder = str(app.state.folder)
        yield live


def request(method: str, path: str, body: bytes | None = b"", headers=()) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines += f"Content-Length: {len(body)}\r\n"
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{lines}\r\n".encode() + (body or b"")


def tensor(**changes) -> dict:
    t = {"name": "image", "shape": [1, 64, 64, 3], "datatype": "FP32", "data": [100.0] * PIXELS}
    return {"inputs": [{**t, **changes}]}


def infer(doc) -> bytes:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return request("POST", "/v2/models/tiny/infer", body, [("Content-Type", "application/json")])


def binary_infer(header: dict, data: bytes, header_length: str | None = None) -> bytes:
    head = json.dumps(header).encode()
    length = header_length if header_length is not None else str(len(head))
    return request("POST", "/v2/models/tiny/infer", head + data, [("Inference-Header-Content-Length", length)])


def _binary_header(size: int, datatype: str = "FP32", shape=(1, 64, 64, 3)) -> dict:
    return {"inputs": [{"name": "image", "shape": list(shape), "datatype": datatype,
                        "parameters": {"binary_data_size": size}}]}  # fmt: skip


def _float_tiff_with_nan() -> bytes:
    a = np.full((32, 32), np.nan, np.float32)
    a[0, 0] = np.inf
    buf = io.BytesIO()
    Image.fromarray(a, mode="F").save(buf, format="TIFF")
    return buf.getvalue()


FP32 = np.full(PIXELS, 100, "<f4")
CASES = {
    # oversize and lying framing
    "Content-Length far beyond the limit, body never sent": (
        request("POST", "/predict", None, [("Content-Length", str(10**12))]), 413, "exceeds 1,048,576 bytes"),
    "Content-Length just over the limit": (request("POST", "/predict", b"x" * (LIMIT + 1)), 413, "exceeds"),
    "v2 JSON over the limit": (infer(b'{"inputs": [' + b" " * LIMIT + b"]}"), 413, "exceeds"),
    "negative Content-Length": (request("POST", "/predict", None, [("Content-Length", "-5")]) + b"abc", 400, ""),
    "Content-Length and chunked together": (
        request("POST", "/predict", None, [("Content-Length", "3"), ("Transfer-Encoding", "chunked")])
        + b"3\r\nabc\r\n0\r\n\r\n", 400, ""),
    "not HTTP at all (a TLS hello)": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64, 400, ""),
    # 431 when TCP delivers the first 64 KiB before the rest (the header-size guard answers before the parser
    # has the whole request line), 400 when it all arrives at once: either way a 4xx and the server stays up.
    "URL of 100 kB": (request("GET", "/v2/models/" + "a" * 100_000), (400, 431), ""),
    "unknown method": (request("FOOBAR", "/v2"), 400, ""),
    "TRACE": (request("TRACE", "/predict"), 405, "Method Not Allowed"),
    # wrong content types
    "JSON sent to /predict": (request("POST", "/predict", b'{"image": [1, 2]}', [("Content-Type", "application/json")]),
                              400, "not a readable image"),
    "text sent to /predict": (
        request("POST", "/predict", b"hello", [("Content-Type", "text/plain")]), 400, "not a readable image"),
    "multipart without boundary": (
        request("POST", "/predict", b"xxxx", [("Content-Type", "multipart/form-data")]), 400, "boundary"),
    "multipart garbage": (
        request("POST", "/predict", b"xxxx", [("Content-Type", "multipart/form-data; boundary=b")]), 400, "multipart"),
    "multipart with two files": (
        request("POST", "/predict", b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nA\r\n'
                b'--b\r\nContent-Disposition: form-data; name="g"; filename="b"\r\n\r\nB\r\n--b--\r\n',
                [("Content-Type", "multipart/form-data; boundary=b")]), 400, "Too many files"),
    "multipart with 20 fields": (
        request("POST", "/predict", b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i
                                             for i in range(20)) + b"--b--\r\n",
                [("Content-Type", "multipart/form-data; boundary=b")]), 400, "Too many fields"),
    "a JPEG sent to v2 infer": (
        request("POST", "/v2/models/tiny/infer", jpeg(200), [("Content-Type", "image/jpeg")]), 400, "not JSON"),
    "form-urlencoded sent to v2 infer": (
        request("POST", "/v2/models/tiny/infer", b"a=1", [("Content-Type", "application/x-www-form-urlencoded")]),
        400, "not JSON"),
    "UTF-16 JSON": (infer('{"inputs": []}'.encode("utf-16")), 400, "exactly one tensor"),
    "invalid UTF-8": (infer(b'{"inputs": "\xff\xfe"}'), 400, "not JSON"),
    "JSON nested 100,000 deep": (infer(b"[" * 100_000 + b"]" * 100_000), 400, "nested too deeply"),
    # NaN and Inf pixels need a float format; the decoder opens none (TIFF is not on its list).
    "a float TIFF of NaN and Inf to /predict": (request("POST", "/predict", _float_tiff_with_nan()), 400,
                                                "not a readable image"),
    # KServe v2 tensors that do not add up
    "shape with 3 dims": (infer(tensor(shape=[1, 64, 192])), 400, "must be [N, 64, 64, 3]"),
    "shape with 5 dims": (infer(tensor(shape=[1, 64, 64, 3, 1])), 400, "must be [N, 64, 64, 3]"),
    "shape N=0": (infer(tensor(shape=[0, 64, 64, 3], data=[])), 400, "1 <= N <= 4"),
    "shape N=-1": (infer(tensor(shape=[-1, 64, 64, 3])), 400, "1 <= N <= 4"),
    "shape N=10**30": (infer(tensor(shape=[10**30, 64, 64, 3])), 400, "1 <= N <= 4"),
    "shape of booleans": (infer(tensor(shape=[True, 64, 64, 3])), 400, "must be [N"),
    "shape of floats": (infer(tensor(shape=[1.0, 64, 64, 3])), 400, "must be [N"),
    "shape as a string": (infer(tensor(shape="1,64,64,3")), 400, "must be [N"),
    "data one value short": (infer(tensor(data=[1.0] * (PIXELS - 1))), 400, f"has {PIXELS - 1} values"),
    "data for two images, shape says one": (infer(tensor(data=[1.0] * 2 * PIXELS)), 400, "values but the shape"),
    "data nested, ragged": (infer(tensor(data=[[1.0, 2.0], [3.0]])), 400, "ragged"),
    "data of booleans": (infer(tensor(data=[True] * PIXELS)), 400, "only numbers"),
    "data of nulls": (infer(tensor(data=[None] * PIXELS)), 400, "only numbers"),
    "data of huge integers": (infer(tensor(data=[2**70] * PIXELS)), 400, "only numbers"),
    "data as an object": (infer(tensor(data={"a": 1})), 400, "list of numbers"),
    "data as a string": (infer(tensor(data="100")), 400, "list of numbers"),
    "data with NaN": (infer(b'{"inputs":[{"name":"image","shape":[1,64,64,3],"datatype":"FP32","data":['
                            + b"NaN," * (PIXELS - 1) + b"NaN]}]}"), 400, "NaN or infinity"),
    "data with Infinity": (infer(b'{"inputs":[{"name":"image","shape":[1,64,64,3],"datatype":"FP32","data":['
                                 + b"1," * (PIXELS - 1) + b"-Infinity]}]}"), 400, "NaN or infinity"),
    "data with 1e400 (overflows to inf)": (infer(b'{"inputs":[{"name":"image","shape":[1,64,64,3],"datatype":'
                                                 b'"FP32","data":[' + b"1e400," * (PIXELS - 1) + b"1]}]}"),
                                           400, "NaN or infinity"),
    "data out of 0..255": (infer(tensor(data=[300.0] * PIXELS)), 400, "0..255"),
    "datatype INT64": (infer(tensor(datatype="INT64")), 400, "not supported"),
    "datatype missing": (infer({"inputs": [{"name": "image", "shape": [1, 64, 64, 3], "data": [1] * PIXELS}]}),
                         400, "not supported"),
    "two input tensors": (infer({"inputs": tensor()["inputs"] * 2}), 400, "exactly one tensor"),
    "inputs as an object": (infer({"inputs": tensor()["inputs"][0]}), 400, "exactly one tensor"),
    "unknown input name": (infer(tensor(name="../image")), 400, "is unknown"),
    "unknown output name": (infer({**tensor(), "outputs": [{"name": "logits"}]}), 400, "output is 'prob'"),
    "parameters not an object": (infer({**tensor(), "parameters": [1]}), 400, "must be a JSON object"),
    "binary: header length beyond the body": (binary_infer(_binary_header(4 * PIXELS), b"", "99999"), 400,
                                               "not a length within the body"),
    "binary: header length negative": (binary_infer(_binary_header(4 * PIXELS), b"", "-1"), 400, "not a length"),
    "binary: fewer bytes than binary_data_size": (binary_infer(_binary_header(4 * PIXELS), FP32.tobytes()[:100]),
                                                  400, "binary_data_size"),
    "binary: size for UINT8, says FP32": (binary_infer(_binary_header(PIXELS), bytes(PIXELS)), 400,
                                          "binary_data_size must be"),
    "binary: FP32 bytes, says FP64": (binary_infer(_binary_header(4 * PIXELS, "FP64"), FP32.tobytes()), 400,
                                      "binary_data_size must be"),
    "binary: NaN inside": (binary_infer(_binary_header(4 * PIXELS), np.where(np.arange(PIXELS) == 7, np.nan, FP32)
                                        .astype("<f4").tobytes()), 400, "NaN or infinity"),
    "binary: +Inf inside": (binary_infer(_binary_header(4 * PIXELS), np.full(PIXELS, np.inf, "<f4").tobytes()), 400,
                            "NaN or infinity"),
    "binary: FP64 -Inf inside": (binary_infer(_binary_header(8 * PIXELS, "FP64"),
                                              np.full(PIXELS, -np.inf, "<f8").tobytes()), 400, "NaN or infinity"),
    # unknown model names and path traversal
    "unknown model": (request("GET", "/v2/models/nope"), 404, "model 'nope' not found"),
    "unknown model version": (request("GET", "/v2/models/tiny/versions/2"), 404, "only version '1'"),
    "infer on an unknown model": (request("POST", "/v2/models/resnet/infer", b"{}"), 404, "not found"),
    "traversal, raw ..": (request("GET", "/v2/models/../../../etc/passwd"), 404, ""),
    "traversal, encoded slashes": (request("GET", "/v2/models/..%2F..%2F..%2Fetc%2Fpasswd"), 404, ""),
    "traversal in the model name": (request("POST", "/v2/models/../infer", b"{}"), 404, "model '..' not found"),
    "traversal in the version": (request("GET", "/v2/models/tiny/versions/..%2F..%2Fmanifest.json"), 404, ""),
    "NUL in the model name": (request("GET", "/v2/models/tiny%00.onnx"), 404, "not found"),
    "model file name as model name": (request("GET", "/v2/models/model.onnx/ready"), 404, "not found"),
    "absolute path as model name": (request("GET", "/v2/models/%2Fetc%2Fpasswd/ready"), 404, ""),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_gets_a_4xx_and_the_server_stays_up(server, case):
    raw, status, message = CASES[case]
    got, body = raw_http(server.port, raw, limit=LIMIT)
    assert got in (status if isinstance(status, tuple) else (status,)), (got, body[:200])
    if message:
        assert message in json.loads(body).get("error", body.decode()) if got != 200 else message in body.decode()
    # Nothing from the file system comes back: no /etc/passwd, not even where the model lives.
    assert b"root:" not in body and server.folder.encode() not in body and b"/tmp" not in body
    assert httpx.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200


def test_the_api_still_answers_correctly_after_all_of_it(server):
    for raw, _, _ in CASES.values():  # the whole barrage once more, back to back
        raw_http(server.port, raw, limit=LIMIT)
    ok = httpx.post(f"{server.url}/v2/models/tiny/infer", json=tensor(data=[220.0] * PIXELS), timeout=5)
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"][0] > 0.9
    assert httpx.post(f"{server.url}/predict", content=jpeg(30), timeout=5).json()["label"] == "no_smile"
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert 'status="500"' not in metrics
