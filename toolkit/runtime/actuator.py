"""Door actuators: ``log`` (dry run) and ``gpio`` (a relay on a gpiozero ``OutputDevice``).

Fail closed at this level too: every actuator starts locked, ``unlock`` arms a watchdog timer that
locks again after ``max_seconds`` even if the loop that opened the door has died, and ``close``
leaves the relay de-energised. A driver that raises leaves the relay in doubt: the actuator then
assumes it may be energised, keeps ``fault`` set (the door reports not ready) and every later
``lock`` tries again until one succeeds.
"""

from __future__ import annotations

import logging
import threading
import warnings

from toolkit.errors import ToolkitError

log = logging.getLogger("toolkit.runtime")


class RelayError(Exception):
    """The relay did not unlock; it was locked again (or is flagged in ``Actuator.fault`` if that failed too)."""


class Actuator:
    """Base: tracks the state and the watchdog; subclasses drive the hardware in ``_set``."""

    name = "base"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.unlocked = False  # True also when the state is unknown: assume the worst
        self.fault: str | None = None  # the last failed relay operation, until that operation succeeds
        self._failed: str | None = None  # "lock" or "unlock"
        self.watchdog_locks = 0  # times the watchdog had to lock a door nobody else locked

    def unlock(self, max_seconds: float) -> None:
        """Energise the relay; it locks itself after ``max_seconds`` whatever else happens.

        Raises:
            RelayError: the driver failed; the relay has been locked again (or ``fault`` says it could not be).
        """
        with self._lock:
            self._cancel_timer()
            # Watchdog a little after the policy's own close, so normal closing stays deterministic.
            self._timer = threading.Timer(max_seconds + 0.5, self._watchdog)
            self._timer.daemon = True
            self._timer.start()
            if self._failed == "lock" and not self._lock_now():
                # The relay did not let go last time and still does not: an opening cannot be counted on it.
                raise RelayError(f"{self.fault}; not unlocking a relay that is stuck")
            if self.unlocked:
                return
            self.unlocked = True  # from the first attempt on, the pin may be high
            try:
                self._set(True)
            except Exception as exc:  # gpiozero and pin drivers raise many types
                self._record("unlock", exc)
                self._lock_now()
                raise RelayError(f"relay: unlock failed ({exc}); the door stays locked") from exc
            if self._failed == "unlock":
                self.fault = self._failed = None

    def lock(self) -> bool:
        """De-energise the relay (idempotent). Never raises: returns False and sets ``fault`` on failure."""
        with self._lock:
            self._cancel_timer()
            return self._lock_now()

    def close(self) -> None:
        """Lock and release the hardware."""
        self.lock()

    def _lock_now(self) -> bool:
        if not self.unlocked and self._failed != "lock":
            return True
        try:
            self._set(False)
        except Exception as exc:
            self.unlocked = True  # unknown: maybe still energised, so every later lock() tries again
            self._record("lock", exc)
            return False
        self.unlocked = False
        if self._failed == "lock":
            self.fault = self._failed = None
            log.warning("relay locked again after a failure")
        return True

    def _record(self, operation: str, exc: Exception) -> None:
        again = self._failed == operation
        self._failed, self.fault = operation, f"relay: {operation} failed ({exc})"
        if again:
            return  # logged when the failure began; the lock is retried every tick
        if operation == "lock":
            log.critical("relay: cannot lock (%s); retrying; check the relay wiring and driver", exc)
        else:
            log.error("relay: unlock failed (%s); locking", exc)

    def _watchdog(self) -> None:
        with self._lock:
            self._timer = None
            if self.unlocked:
                self.watchdog_locks += 1
                log.warning("relay watchdog: locking a door still unlocked after its open period")
            self._lock_now()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _set(self, unlocked: bool) -> None:
        raise NotImplementedError


class LogActuator(Actuator):
    """Logs what a relay would do: the default, so a dry run cannot open a real door."""

    name = "log"

    def __init__(self) -> None:
        super().__init__()
        self.history: list[bool] = []

    def _set(self, unlocked: bool) -> None:
        self.history.append(unlocked)
        log.info("door %s", "UNLOCKED" if unlocked else "locked")


class GpioActuator(Actuator):
    """A relay driven by a gpiozero ``OutputDevice`` on a BCM pin, starting de-energised.

    Args:
        pin: BCM pin number.
        active_high: False for boards that energise the relay when the pin is low.

    Raises:
        ToolkitError: gpiozero is missing or the pin cannot be claimed.
    """

    name = "gpio"

    def __init__(self, pin: int, active_high: bool = True) -> None:
        super().__init__()
        try:
            from gpiozero import OutputDevice
        except ImportError as exc:
            raise ToolkitError("--relay gpio needs gpiozero: pip install 'door-camera-toolkit[door]'") from exc
        try:
            with warnings.catch_warnings():
                # gpiozero warns once per pin factory it fails to load; the error below says it in one line.
                warnings.simplefilter("ignore")
                self.device = OutputDevice(pin, active_high=active_high, initial_value=False)
        except Exception as exc:  # gpiozero raises many types: no pin factory, pin in use, bad number
            raise ToolkitError(f"--relay-pin {pin}: cannot drive the GPIO pin ({exc})") from exc

    def _set(self, unlocked: bool) -> None:
        if unlocked:
            self.device.on()
        else:
            self.device.off()

    def close(self) -> None:
        super().close()
        self.device.close()


def make_actuator(kind: str, pin: int = 17, active_high: bool = True) -> Actuator:
    """Build the actuator named by ``--relay``.

    Raises:
        ToolkitError: an unknown kind.
    """
    if kind == "log":
        return LogActuator()
    if kind == "gpio":
        return GpioActuator(pin, active_high)
    raise ToolkitError(f"--relay {kind!r}: choose 'log' or 'gpio'")
