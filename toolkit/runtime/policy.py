"""The door's decision policy: k happy frames of the last n, open for T seconds, cooldown, fail closed.

A pure state machine over an injectable monotonic clock, so tests replay exact timelines. The door is
open only inside an open period started by a k-of-n vote (or an authenticated manual unlock); any
fault, a stale camera or a model failure ends the period at once and clears the votes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.runtime.config import PolicyConfig

Clock = Callable[[], float]


@dataclass(frozen=True)
class Verdict:
    """What the policy says after one observation or tick."""

    open: bool  # the relay should be energised now
    opened: bool  # this call started an open period (log it, snapshot it)
    votes: int  # happy frames in the window
    reason: str


class DoorPolicy:
    """k-of-n voting with an open period, a cooldown and fail-closed faults.

    Args:
        config: k, n, open/cooldown/stale seconds.
        threshold: P(positive) at or above which a frame votes to open.
        clock: monotonic seconds; injectable for deterministic tests.
    """

    def __init__(self, config: PolicyConfig, threshold: float, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.threshold = threshold
        self.clock = clock
        self._votes: deque[bool] = deque(maxlen=config.n)
        self._open_until = -1.0
        self._cooldown_until = -1.0
        self._last_frame: float | None = None
        self.fault: str | None = "no frame yet"  # in doubt until the first good frame

    def observe(self, probability: float | None) -> Verdict:
        """Record one frame: P(positive), or None when the frame has no face (it votes no)."""
        now = self.clock()
        self._last_frame = now
        self.fault = None
        happy = probability is not None and probability >= self.threshold
        self._votes.append(happy)
        votes = sum(self._votes)
        if self.is_open(now):
            return Verdict(True, False, votes, "open period")
        if now < self._cooldown_until:
            return Verdict(False, False, votes, "cooldown")
        if votes >= self.config.k:
            reason = f"{votes} of the last {len(self._votes)} frames happy"
            self._start_open(now)
            return Verdict(True, True, votes, reason)
        return Verdict(False, False, votes, "locked")

    def manual_open(self) -> Verdict:
        """An authenticated unlock: open for the open period, whatever the votes."""
        votes = sum(self._votes)
        self._start_open(self.clock())  # always a new period, even when already open: it extends it
        return Verdict(True, True, votes, "manual unlock")

    def fail(self, reason: str) -> Verdict:
        """A fault (camera error, model failure): lock now, forget the votes, not ready."""
        now = self.clock()
        self.fault = reason
        self._votes.clear()
        if self.is_open(now):  # an opening cut short: the cooldown starts now, not at its planned end
            self._cooldown_until = now + self.config.cooldown_seconds
        self._open_until = -1.0
        return Verdict(False, False, 0, reason)

    def tick(self) -> Verdict:
        """Check time-based rules: the open period ending and a stale camera."""
        now = self.clock()
        if self._last_frame is not None and now - self._last_frame > self.config.stale_seconds:
            if self.fault is None or not self.fault.startswith("no frame"):
                self.fail(f"no frame for {now - self._last_frame:.1f} s")
            return Verdict(False, False, 0, self.fault or "stale")
        if self.fault is not None:
            return Verdict(False, False, 0, self.fault)
        is_open = self.is_open(now)
        return Verdict(is_open, False, sum(self._votes), "open period" if is_open else "locked")

    def is_open(self, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        return now < self._open_until

    def ready(self) -> tuple[bool, str]:
        """Ready means able to decide: a fresh frame and no fault."""
        self.tick()
        return (self.fault is None, self.fault or "ready")

    def _start_open(self, now: float) -> None:
        self._open_until = now + self.config.open_seconds
        self._cooldown_until = self._open_until + self.config.cooldown_seconds
        self._votes.clear()  # a new opening needs fresh evidence after the cooldown
