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
import secrets
import stat
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


# Token rules. A random token of 16 characters from 10 or more symbols has at least 10**16 values: at the ~100
# guesses a second a Pi answers, longer than anyone lives. The rules catch typed-in words ("1", "door1234"), not
# every weak token; ``toolkit door token`` prints one that passes.
MIN_TOKEN_CHARS = 16
MIN_TOKEN_DISTINCT = 10


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


def new_token() -> str:
    """A fresh token from :mod:`secrets` (256 bits, URL-safe) that passes :func:`token_problem`."""
    while True:
        token = secrets.token_urlsafe(32)
        if token_problem(token) is None:  # 43 random characters fail the distinct-symbol rule ~never
            return token


def token_problem(token: str) -> str | None:
    """Why ``token`` is too easy to guess (length, distinct characters), or None. Never quotes the token."""
    if len(token) < MIN_TOKEN_CHARS:
        return f"it has {len(token)} characters, fewer than {MIN_TOKEN_CHARS}"
    if len(set(token)) < MIN_TOKEN_DISTINCT:
        return f"it uses {len(set(token))} distinct characters, fewer than {MIN_TOKEN_DISTINCT}"
    return None


def token_file_problem(path: Path, environ: dict | None = None) -> str | None:
    """Why other users of the machine could read (or replace) the token file, or None.

    systemd's ``LoadCredential=`` copy is accepted as it appears: written 0400 by root into
    ``$CREDENTIALS_DIRECTORY`` with a POSIX ACL entry granting the service's user read access, and ``stat``
    shows an ACL's mask in the group bits, so that file reads as mode 0440 though no group can read it (on a
    file system without ACLs systemd chowns it to the user instead: mode 0400). There, a group *read* bit is
    fine; any "other" bit or a write bit is not. Elsewhere any group or other bit refuses the file.
    """
    environ = os.environ if environ is None else environ
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        return f"cannot stat it ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        return "it is not a regular file (a link or a device)"
    mode = stat.S_IMODE(st.st_mode)
    creds = environ.get("CREDENTIALS_DIRECTORY", "")
    if creds and Path(path).parent.resolve() == Path(creds).resolve():
        if mode & 0o027 or st.st_uid not in (0, os.getuid()):
            return f"mode {mode:04o}, owner uid {st.st_uid} in $CREDENTIALS_DIRECTORY is not how systemd writes it"
        return None
    if mode & 0o077:
        return f"mode {mode:04o} lets other users read or change it; run chmod 600 {path}"
    return None


def unlock_refusal(config: ServeConfig, token: str | None, environ: dict | None = None) -> str | None:
    """The loud line when the configured token may not unlock (weak, or a file others can read), or None.

    The door keeps deciding and serving with manual unlock disabled: an upgrade must never stop a door.
    """
    if token is None:
        return None
    if config.token_file is not None:
        where = str(config.token_file)
        why = token_file_problem(Path(config.token_file), environ) or token_problem(token)
        fix = f"replace it with a fresh one: (umask 077; toolkit door token > {where})"
    else:
        where = f"${config.token_env}"
        why = token_problem(token)
        fix = f"set {where} to the output of 'toolkit door token'"
    if why is None:
        return None
    return f"MANUAL UNLOCK DISABLED: the unlock token in {where} is refused: {why}; {fix}, then restart the door"


def tokens_match(given: str, token: str) -> bool:
    """Constant-time token check that leaks neither the content nor the length of the token.

    ``hmac.compare_digest`` returns early on inputs of different lengths, so both sides are hashed
    to 32 bytes first.
    """
    a = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    b = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(a, b)


class UnlockLimiter:
    """Failed manual-unlock attempts per client in a sliding window; over the limit, the client's wrong tokens wait.

    Only *wrong* tokens are limited, and only for the client that sent them: the right token is checked
    before the limit and always opens. With a token of :data:`MIN_TOKEN_CHARS` random characters guessing
    is hopeless, so checking every token costs nothing, while refusing the right one because of someone
    else's failures would let any guest lock the owner out (a shared budget did: ten addresses, five wrong
    tokens each). All MQTT publishers are one client (MQTT carries no identity).

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
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float | None:
        """Seconds the client must wait before its next wrong token counts, or None when it may try now."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            mine = self._clients.get(client)
            if mine is None or len(mine) < self.max_failures:
                return None
            wait = mine[-self.max_failures] + self.window - now
            return wait if wait > 0 else None

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            times = self._clients.pop(client, None) or deque(maxlen=self.max_failures)
            times.append(now)
            self._clients[client] = times  # re-inserted: the dict's order is least recently failed first
            while len(self._clients) > self.max_clients:
                self._clients.pop(next(iter(self._clients)))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)

    def _prune(self, now: float) -> None:
        for client in [c for c, times in self._clients.items() if times[-1] + self.window <= now]:
            del self._clients[client]


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
