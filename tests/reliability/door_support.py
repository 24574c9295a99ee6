"""Helpers for the door-runtime reliability tests (no TensorFlow): live servers with the production uvicorn
settings, raw-socket HTTP, gpiozero mock pins, a door loop on a folder camera.

Reuses tests/runtime/runtime_support.py (tiny ONNX exports built with the onnx helper API), which
tests/conftest.py makes importable.
"""

from __future__ import annotations

import contextlib
import select
import socket
from pathlib import Path

from PIL import Image
from runtime_support import LiveServer, frame, free_port, jpeg, make_export

from toolkit.runtime.core.config import ServeConfig

__all__ = ["frame", "free_port", "jpeg", "make_export", "GuardedServer", "mock_pins", "raw_http", "folder_camera"]
HAPPY, SAD = 220, 40


class GuardedServer(LiveServer):
    """A real uvicorn server on 127.0.0.1 in a thread, configured exactly as ``toolkit door serve`` does
    (``server.uvicorn_config``: header deadline, keep-alive, no access log)."""

    def __init__(self, app, config: ServeConfig | None = None, log_level: str = "warning") -> None:
        import dataclasses

        self._serve_config = dataclasses.replace(config or ServeConfig(), log_level=log_level)
        super().__init__(app)

    def uvicorn_config(self, app):
        from toolkit.runtime.server import uvicorn_config

        return uvicorn_config(app, self._serve_config, port=self.port)


def raw_http(port: int, request: bytes, timeout: float = 10.0, limit: int | None = None) -> tuple[int, bytes]:
    """Send bytes as they are (no client-side URL normalisation) and return (status, body).

    A body whose Content-Length is over ``limit`` is held back until the server has had ``timeout`` seconds to
    answer the headers, as a client sending ``Expect: 100-continue`` would: the server refuses such a body (413)
    unread and closes, and a body still arriving at a closed socket makes the kernel reset the connection, which
    can destroy the 413 before the client reads it."""
    head, sep, rest = request.partition(b"\r\n\r\n")
    declared = _content_length(head)
    held_back = limit is not None and declared.isdigit() and int(declared) > limit
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if held_back:  # the headers alone, then the body only if the server has not answered them
            s.sendall(head + sep)
            if not select.select([s], [], [], timeout)[0]:
                s.sendall(rest)
        else:  # in one piece, so the server's reads take it all (bytes left unread at close would reset it)
            s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(_content_length(head) or 0)
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(head.split(b" ")[1]), body


def _content_length(head: bytes) -> bytes:
    """The first Content-Length value in a header block, as sent (b"" when there is none)."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return line.split(b":", 1)[1].strip()
    return b""


@contextlib.contextmanager
def mock_pins(pin_class=None):
    """gpiozero's MockFactory as the pin factory for the duration (real gpiozero devices, mock pins)."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    previous = Device.pin_factory
    factory = MockFactory(pin_class=pin_class) if pin_class else MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


def folder_camera(folder: Path, values, size=(120, 160)) -> Path:
    """A folder of uniform PNG frames, one per brightness value (220 happy, 40 sad for the tiny model)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(values):
        Image.fromarray(frame(v, size)).save(folder / f"{i:03d}.png")
    return folder


@contextlib.contextmanager
def capture_logs(level: int = 1):
    """Every log record of the process (toolkit, uvicorn, root), whatever their propagate flags, at ``level``."""
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not any(r is record for r in records[-5:]):  # one record reaches several of these loggers
                records.append(record)

    handler = Keep(level)
    # Not uvicorn.access: uvicorn decides whether to write its access log by whether that logger has a handler.
    names = ["", "toolkit", "toolkit.runtime", "uvicorn", "uvicorn.error", "uvicorn.asgi", "python_multipart"]
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(level)
    try:
        yield records
    finally:
        for lg, old in saved:
            lg.removeHandler(handler)
            lg.setLevel(old)


def formatted(records) -> str:
    """The records as a log file would hold them, tracebacks included."""
    import logging

    fmt = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return "\n".join(fmt.format(r) for r in records)
