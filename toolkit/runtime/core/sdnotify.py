"""systemd's notify protocol in a few lines of socket code: READY=1, WATCHDOG=1, STOPPING=1.

A ``Type=notify`` unit starts the door and waits for READY=1; with ``WatchdogSec=`` it restarts the
service when WATCHDOG=1 stops arriving. The door pings from its decision loop itself (not from a
timer thread), so a loop hung in a camera driver or the model is restarted even though the process
and its API are alive. No ``systemd-python`` (it needs a compiler and libsystemd headers on the Pi).

Without ``$NOTIFY_SOCKET`` (run by hand, in tests, under another supervisor) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger("toolkit.runtime")


class Notifier:
    """Sends state lines to systemd's notify socket; rate-limits watchdog pings.

    Args:
        environ: where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` come from (default: os.environ).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, environ: dict | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # '@name' is an abstract socket: a leading NUL byte in the kernel's namespace, no file.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.clock = clock
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())  # a watchdog meant for another process is not ours to feed
        # Ping at a quarter of the watchdog period: a ping per frame would be 30 datagrams a second for nothing,
        # and one per period could arrive just too late.
        self.watchdog_interval = int(usec) / 4e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_ping = float("-inf")
        self._socket: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, state: str) -> bool:
        """Send one state (e.g. ``READY=1``); True when it was sent. Never raises: systemd is optional."""
        if not self.address:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(state.encode(), self.address)
            return True
        except OSError as exc:
            if not self._failed:  # once: a missing socket must not fill the journal at the frame rate
                self._failed = True
                log.warning("systemd notify socket %s: %s", self.address.replace("\0", "@"), exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Ping the watchdog if one is set and a quarter period has passed; cheap enough to call per frame."""
        if self.watchdog_interval is None:
            return False
        now = self.clock()
        if now - self._last_ping < self.watchdog_interval:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
