"""Who is asking, and which names the API answers to: the real client behind a trusted proxy, the allowed
``Host`` names, the headers every answer carries, and refusals summarised in the log.

Standard library only, apart from the ASGI middleware's plain ``scope``/``send`` protocol (no import needed).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger("toolkit.runtime")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
HOSTS_SETTING = "--allowed-hosts"
PROXY_SETTING = "--trusted-proxy"


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks (``192.168.1.2``, ``10.0.0.0/8``, ``::1``) as networks.

    Raises:
        ValueError: an entry is neither (the message names it).
    """
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip().strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 127.0.0.1 or 10.0.0.0/8)") from None
    return tuple(out)


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def real_client(peer: str | None, headers: list[tuple[bytes, bytes]], proxies: tuple[Network, ...]) -> str:
    """The client a request comes from: its peer address, or, when the peer is a trusted proxy, the
    right-most ``X-Forwarded-For`` entry, the one that proxy added.

    Entries further left were sent by the client itself and can say anything; a proxy appends the address
    it saw. A proxy that forwards without the header, or with an entry that is no address, leaves the
    proxy's own address: stricter (all its clients share one budget), never looser.
    """
    peer = peer or "unknown"
    if not proxies or not _in(peer, proxies):
        return peer
    forwarded = [v for k, v in headers if k == b"x-forwarded-for"]
    if not forwarded:
        return peer
    last = forwarded[-1].decode("latin-1").rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


def default_hosts(listen: str) -> tuple[str, ...]:
    """The names the API answers to unless told: its listen address, localhost and the machine's names."""
    names = {listen.lower(), "localhost"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
            names.add(name.lower().split(".")[0] + ".local")  # mDNS, how a household reaches a Pi
    return tuple(sorted(names))


class HostCheck:
    """Is a ``Host`` header one this API answers to? A DNS-rebinding page reaches the API under the attacker's
    own name; refusing unknown names keeps it from reading the state and the timeline.

    Any IP literal passes: rebinding needs a name the attacker controls, and the machine's addresses
    (a LAN client's ``http://192.168.1.20:8000``) cannot all be listed in advance. ``*`` allows every name.
    """

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = frozenset(h.strip().lower().rstrip(".") for h in allowed if h.strip())
        self.any = "*" in self.allowed

    def __call__(self, host: str) -> bool:
        if self.any or not host:  # no Host at all (HTTP/1.0): no browser sends that, so no rebinding page either
            return True
        name = host.strip().lower()
        if name.startswith("["):  # [::1]:8000
            name = name[1 : name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.split(":")[0]
        name = name.rstrip(".")
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.allowed


def docs_csp(html: str) -> str:
    """A Content-Security-Policy for Swagger UI's page: its own files, plus its one inline script by hash."""
    import base64
    import hashlib

    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    # Swagger UI sets style attributes from its script: styles need 'unsafe-inline' (styles cannot run code).
    return (f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")  # fmt: skip


class Guard:
    """ASGI middleware: refuse unknown ``Host`` names (400 naming the setting) and add ``nosniff`` to every answer
    (a JSON error or a snapshot must never be run as a script by a browser that guesses types)."""

    def __init__(self, app, hosts: HostCheck, refusals: RefusalLog | None = None) -> None:
        self.app, self.hosts, self.refusals = app, hosts, refusals

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if not self.hosts(host):
            if self.refusals is not None:
                self.refusals.note("unknown Host name")
            body = (f'{{"error": "Host {host[:100]!r} is not one this door answers to; add the name to '
                    f'{HOSTS_SETTING} (a comma list, or * for any)"}}').encode()  # fmt: skip
            await send({"type": "http.response.start", "status": 400, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        extra = [(b"x-content-type-options", b"nosniff")]

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in extra if h[0] not in names)]}  # fmt: skip
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RefusalLog:
    """Refused unlocks and requests, summarised: the first one of a quiet spell is logged at once, then one
    warning a minute with counts while they go on. At WARNING level, so ``--quiet`` (the shipped unit's)
    keeps them: an attack must reach the journal, but 2,000 guesses must not write 2,000 lines.

    Args:
        what: the source, e.g. "http" or "mqtt".
        every: seconds between summaries.
    """

    def __init__(self, what: str, every: float = 60.0) -> None:
        self.what, self.every = what, every
        self._counts: Counter[str] = Counter()
        self._clients: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.lines = 0  # warnings written (tests, the benchmark)

    def note(self, reason: str, client: str | None = None) -> None:
        """Count one refusal (``reason`` never holds a token)."""
        with self._lock:
            if self._timer is None:  # a quiet spell ends: say so now, then summarise
                self._warn(f"{self.what}: refused ({reason}" + (f", from {client}" if client else "") +
                           f"); further refusals are summarised every {self.every:g} s")  # fmt: skip
                self._arm()
                return
            self._counts[reason] += 1
            if client:
                self._clients[client] += 1

    def flush(self) -> None:
        """Log what was counted since the last line (the timer calls this; so may a test or a shutdown)."""
        with self._lock:
            if self._timer is not None and self._timer is not threading.current_thread():
                self._timer.cancel()  # flushed early (a shutdown, a test): the pending summary has nothing left
            self._timer = None
            if not self._counts:
                return
            total = sum(self._counts.values())
            reasons = ", ".join(f"{n} {r}" for r, n in self._counts.most_common())
            top = ", ".join(f"{c} ({n})" for c, n in self._clients.most_common(3))
            self._warn(f"{self.what}: {total} refused in the last {self.every:g} s: {reasons}"
                       + (f"; from {len(self._clients)} client(s), most: {top}" if top else ""))  # fmt: skip
            self._counts.clear()
            self._clients.clear()
            self._arm()

    def close(self) -> None:
        """Log what is counted and stop the timer."""
        self.flush()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _arm(self) -> None:
        self._timer = threading.Timer(self.every, self.flush)
        self._timer.daemon = True
        self._timer.start()

    def _warn(self, line: str) -> None:
        self.lines += 1
        log.warning("%s", line)
