"""Door actuators: ``log`` (dry run) and ``gpio`` (a relay on a gpiozero ``OutputDevice``).

Fail closed at this level too: every actuator starts locked, ``unlock`` arms a watchdog timer that
locks again after ``max_seconds`` even if the loop that opened the door has died, and ``close``
leaves the relay de-energised.
"""

from __future__ import annotations

import logging
import threading
import warnings

from toolkit.errors import ToolkitError

log = logging.getLogger("toolkit.runtime")


class Actuator:
    """Base: tracks the state and the watchdog; subclasses drive the hardware in ``_set``."""

    name = "base"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.unlocked = False

    def unlock(self, max_seconds: float) -> None:
        """Energise the relay; it locks itself after ``max_seconds`` whatever else happens."""
        with self._lock:
            self._cancel_timer()
            # Watchdog a little after the policy's own close, so normal closing stays deterministic.
            self._timer = threading.Timer(max_seconds + 0.5, self.lock)
            self._timer.daemon = True
            self._timer.start()
            if not self.unlocked:
                self._set(True)
                self.unlocked = True

    def lock(self) -> None:
        """De-energise the relay (idempotent)."""
        with self._lock:
            self._cancel_timer()
            if self.unlocked:
                self._set(False)
                self.unlocked = False

    def close(self) -> None:
        """Lock and release the hardware."""
        self.lock()

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
            raise ToolkitError("--relay gpio needs gpiozero: pip install 'toolkit[door]'") from exc
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
