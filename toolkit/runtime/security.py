"""What keeps the door API (and its MQTT command) safe to expose: the token, its checks, a failed-unlock
limit, slow-client timeouts.

Standard library only: uvicorn comes with the ``door`` extra and is imported inside
:func:`guarded_http_protocol`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.runtime.core.config import ServeConfig

log = logging.getLogger("toolkit.runtime")

# Request line and headers together; uvicorn's httptools parser has no limit of its own (h11's is 16 KiB).
MAX_HEADER_BYTES = 64 << 10


def load_token(config: ServeConfig) -> str | None:
    """The manual-unlock token from ``--token-file`` or the env var; None disables manual unlock.

    Raises:
        ToolkitError: the token file is unreadable.
    """
    if config.token_file is not None:
        try:
            token = Path(config.token_file).read_text().strip()
        except OSError as exc:
            raise ToolkitError(f"{config.token_file}: cannot read the token file ({exc.strerror})") from exc
    else:
        token = os.environ.get(config.token_env, "").strip()
    return token or None


def tokens_match(given: str, token: str) -> bool:
    """Constant-time token check that leaks neither the content nor the length of the token.

    ``hmac.compare_digest`` returns early on inputs of different lengths, so both sides are hashed
    to 32 bytes first.
    """
    a = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    b = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(a, b)


class UnlockLimiter:
    """Failed manual-unlock attempts per client in a sliding window; over the limit, the client waits.

    While a client is over the limit every attempt is refused unchecked, even one with the right
    token: a lockout that a correct guess could end would still answer the guess. All clients together
    get ten times the per-client budget, so guessing from many addresses is slowed as well.

    Args:
        max_failures: wrong tokens a client may send per window.
        window: seconds a failure is remembered.
        clock: monotonic seconds (injectable for tests); wall-clock jumps cannot reset the limit.
        max_clients: addresses remembered at most; beyond it the oldest are forgotten (bounded memory).
    """

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 4096,
    ) -> None:
        self.max_failures, self.window, self.clock, self.max_clients = max_failures, window, clock, max_clients
        self._clients: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float | None:
        """Seconds the client must wait before its next attempt, or None when it may try now."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            waits = []
            mine = self._clients.get(client)
            if mine is not None and len(mine) >= self.max_failures:
                waits.append(mine[-self.max_failures] + self.window - now)
            if len(self._all) >= 10 * self.max_failures:
                waits.append(self._all[-10 * self.max_failures] + self.window - now)
            wait = max(waits, default=0.0)
            return wait if wait > 0 else None

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            self._clients.setdefault(client, deque(maxlen=self.max_failures)).append(now)
            self._all.append(now)
            while len(self._all) > 10 * self.max_failures:
                self._all.popleft()
            while len(self._clients) > self.max_clients:
                self._clients.pop(next(iter(self._clients)))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)

    def _prune(self, now: float) -> None:
        for client in [c for c, times in self._clients.items() if times[-1] + self.window <= now]:
            del self._clients[client]
        while self._all and self._all[0] + self.window <= now:
            self._all.popleft()


def retry_seconds(wait: float) -> int:
    """A Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; any other name or address can be reached from outside."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, has_token: bool, token_env: str) -> str | None:
    """What to warn about when the API listens beyond loopback; None on loopback."""
    if is_loopback(host):
        return None
    if not has_token:
        return (
            f"--host {host}: the API is reachable from the network and no unlock token is configured: anyone "
            "who reaches it can run the model and read /metrics without authentication (manual unlock stays "
            f"disabled); bind 127.0.0.1, or set {token_env} / --token-file and keep the port behind a firewall "
            "or a TLS reverse proxy"
        )
    return (
        f"--host {host}: the API is reachable from the network and plain HTTP sends the unlock token in "
        "clear; put a TLS reverse proxy or a firewall in front of it"
    )


def guarded_http_protocol(timeout: float, max_header_bytes: int = MAX_HEADER_BYTES) -> type:
    """uvicorn's HTTP protocol with a deadline and a size limit for request headers, which uvicorn lacks.

    uvicorn times out idle keep-alive connections only after a response; a client that connects and
    sends its headers a byte at a time (slowloris) would hold its connection forever, and httptools
    buffers headers of any size. With this protocol a connection must complete each request's headers
    within ``timeout`` seconds of connecting or of the request's first byte, in at most
    ``max_header_bytes`` (else 431); the body has its own deadline in the app.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # no httptools wheel for this platform
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class HeaderDeadlineProtocol(Base):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline = None
            self._header_bytes = 0
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and not self._in_request():
                self._arm()  # the first byte of the next request on a keep-alive connection
                self._header_bytes = 0
            super().data_received(data)
            if self._deadline is not None and self._in_request():
                self._deadline.cancel()  # headers complete: the app and its body deadline take over
                self._deadline = None
            elif not self._in_request() and not self.transport.is_closing():
                # Only bytes that did not complete the headers count: a body in the same chunk is fine.
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    body = f'{{"error": "request headers exceed {max_header_bytes:,} bytes"}}'.encode()
                    self.transport.write(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    self.transport.close()

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        def _in_request(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(timeout, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            if not self._in_request() and not self.transport.is_closing():
                log.debug("closing a connection that sent no complete request headers in %g s", timeout)
                self.transport.close()

    return HeaderDeadlineProtocol
