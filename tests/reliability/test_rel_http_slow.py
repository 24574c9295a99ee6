"""Slow clients (slowloris): headers or bodies trickling in, or nothing at all, are cut off after the request
timeout, while other clients keep being served promptly. uvicorn alone would hold such connections forever."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from door_support import GuardedServer, jpeg, make_export

from toolkit.runtime.core.config import ModelConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.server import create_app

TIMEOUT = 1.5  # request_timeout_seconds for these tests (30 s in production)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = ServeConfig(request_timeout_seconds=TIMEOUT)
    app = create_app(ModelHolder(ModelConfig(make_export(tmp_path_factory.mktemp("slow") / "tiny"))), config)
    with GuardedServer(app, config) as live:
        yield live


class Trickler(threading.Thread):
    """Sends ``first``, then one byte of ``rest`` every ``every`` seconds; records when and how the server ended it."""

    def __init__(self, port: int, first: bytes, rest: bytes = b"", every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.first, self.rest, self.every = first, rest, every
        self.started_at = time.monotonic()
        self.ended_after: float | None = None
        self.answer = b""

    def run(self) -> None:
        try:
            self.sock.sendall(self.first)
            self.sock.setblocking(False)
            for byte in self.rest:
                time.sleep(self.every)
                try:
                    chunk = self.sock.recv(65536)
                except BlockingIOError:
                    chunk = None
                if chunk == b"":
                    break
                if chunk:
                    self.answer += chunk
                self.sock.send(bytes([byte]))
            self.sock.settimeout(10)
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.answer += chunk
        except OSError:  # reset or broken pipe: closed by the server, as it should be
            pass
        finally:
            self.ended_after = time.monotonic() - self.started_at
            self.sock.close()


def _slow_headers(port: int) -> Trickler:
    return Trickler(port, b"GET /v2 HTTP/1.1\r\nHo", b"st: x\r\nX-Padding: " + b"a" * 200)


def _slow_body(port: int, path: str = "/predict", headers: bytes = b"", start: bytes = b"\xff\xd8") -> Trickler:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n".encode() + headers + b"\r\n"
    return Trickler(port, head + start, b"x" * 200)


def test_slow_headers_slow_body_and_idle_connections_are_cut_off(server):
    port = server.port
    boundary = b"Content-Type: multipart/form-data; boundary=b\r\n"
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n\xff\xd8'
    chunked = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"
    no_headers = [_slow_headers(port) for _ in range(8)] + [Trickler(port, b"") for _ in range(4)]  # 4 say nothing
    slow_bodies = [_slow_body(port) for _ in range(4)]
    slow_bodies += [_slow_body(port, "/v2/models/tiny/infer", b"Content-Type: application/json\r\n") for _ in range(2)]
    slow_bodies += [_slow_body(port, "/predict", boundary, part) for _ in range(2)]
    slow_bodies += [Trickler(port, chunked, b"cde\r\n5\r\nfghij\r\n" * 20)]
    tricklers = no_headers + slow_bodies
    for t in tricklers:
        t.start()
    # Other clients are served promptly all the while.
    latencies = []
    body = jpeg(220)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        end = time.monotonic() + TIMEOUT + 0.5
        while time.monotonic() < end:
            start = time.monotonic()
            r = client.post("/predict", content=body)
            latencies.append(time.monotonic() - start)
            assert r.status_code == 200 and r.json()["label"] == "smile"
    for t in tricklers:
        t.join(timeout=10)
    assert len(latencies) >= 10 and max(latencies) < 1.0, (len(latencies), max(latencies))
    for t in tricklers:
        assert t.ended_after is not None and t.ended_after < TIMEOUT + 1.5, (t.first[:30], t.ended_after)
        # Cut off well before the tricklers would have finished (200 bytes at 5 bytes/s = 40 s).
        assert t.ended_after > TIMEOUT - 0.2, (t.first[:30], t.ended_after)
    # A slow body gets a JSON 408 saying why; slow or missing headers just get the connection closed.
    for t in slow_bodies:
        assert t.answer.startswith(b"HTTP/1.1 408"), t.answer[:80]
        assert b"did not arrive within 1.5 s" in t.answer and b"connection: close" in t.answer.lower()
    for t in no_headers:
        assert t.answer == b"", t.answer[:80]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'route="/predict",status="408"' in metrics


def test_a_slow_second_request_on_a_keep_alive_connection_is_cut_off(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        s.sendall(b"GET /v2 HT")  # then nothing more
        assert s.recv(65536) == b""  # closed by the server
        assert TIMEOUT - 0.2 < time.monotonic() - start < TIMEOUT + 1.5


def test_a_fast_large_upload_is_not_mistaken_for_a_slow_client(server):
    big = b"\x00" * (4 << 20)  # 4 MB, well under the 8 MB limit: a bad image, but read completely
    r = httpx.post(f"{server.url}/predict", content=big, timeout=10)
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]


def test_headers_beyond_the_limit_get_431(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(40):  # 40 x 8 KiB of header lines in separate writes
                s.sendall(b"X-Pad: " + b"a" * 8192 + b"\r\n")
                time.sleep(0.005)
        except OSError:
            pass  # the server may close before we are done
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431") and b"request headers exceed 65,536 bytes" in answer
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
