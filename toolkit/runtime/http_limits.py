"""Request limits for the door API: an ASGI middleware that refuses oversized (413) and slow (408)
bodies before the app reads them, counts every request for Prometheus, and the ``{"error": "..."}``
JSON every refusal is answered with. Slow *headers* are cut off earlier, in uvicorn's protocol
(:func:`toolkit.runtime.security.guarded_http_protocol`).
"""

from __future__ import annotations

import asyncio
import time

from fastapi.responses import JSONResponse

from toolkit.runtime.metrics import Metrics


class BodyTooLarge(Exception):
    """Raised from the receive channel once a request body passes the configured limit."""


class BodyTimeout(Exception):
    """Raised from the receive channel when the body has not arrived within the request timeout."""


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The API's one error shape: ``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class LimitAndMeasure:
    """ASGI middleware: refuse oversized (413) and slow (408) bodies, count every request for Prometheus."""

    def __init__(self, app, metrics: Metrics, max_body: int, timeout: float) -> None:
        self.app, self.metrics, self.max_body, self.timeout = app, metrics, max_body, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            # Refused before reading a byte: a client cannot make us buffer a huge body.
            message = f"request body exceeds {self.max_body:,} bytes" if length.isdigit() else "bad Content-Length"
            response = error_response(413 if length.isdigit() else 400, message)
            await response(scope, receive, send)
            self.metrics.request("unmatched", scope["method"], response.status_code, time.perf_counter() - start)
            return
        seen, body_done = 0, False
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def limited_receive():
            nonlocal seen, body_done
            if body_done:  # later receives wait for a disconnect: no deadline on those
                return await receive()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.0))
            except asyncio.TimeoutError:
                raise BodyTimeout() from None
            seen += len(message.get("body", b""))
            if seen > self.max_body:  # chunked uploads carry no Content-Length
                raise BodyTooLarge()
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # templates, not raw paths: bounded labels
            self.metrics.request(route, scope["method"], status[0], time.perf_counter() - start)
