"""The door's decision policy: k happy frames of the last n, open for T seconds, cooldown, fail closed.

A pure state machine over an injectable monotonic clock, so tests replay exact timelines. The door is
open only inside an open period started by a k-of-n vote (or an authenticated manual unlock); any
fault, a stale camera or a model failure ends a vote's period at once and clears the votes. A manual
period does not depend on the camera or the model, so only a relay fault or a clock jump ends it early.
A clock that goes backwards ends every period: nothing can stay open "until" a time that moved away.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.runtime.core.config import PolicyConfig

Clock = Callable[[], float]
# A monotonic clock never goes back; an injected or broken one might. Below this it is rounding noise.
BACKWARDS_TOLERANCE = 0.001


def visit_far(frame_far: float, k: int, n: int) -> dict:
    """The false-accept rate per visit of a non-smiling person under the k-of-n rule.

    A visit is a window of ``n`` frames; the door opens when ``k`` of them score at or above the threshold.
    Frames of one visit are neither independent nor identical, so both ends are given: with independent
    frames the rate is the binomial tail P(X >= k), X ~ Bin(n, frame_far); with identical frames (a
    still face) every frame agrees and the rate is ``frame_far`` itself. The truth lies between.
    """
    p = min(max(float(frame_far), 0.0), 1.0)
    tail = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    return {"k": k, "n": n, "independent_frames": tail, "identical_frames": p}


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
        self._open_until = float("-inf")  # end of the period a k-of-n vote started
        self._manual_until = float("-inf")  # end of the period a manual unlock started
        self._cooldown_until = float("-inf")
        self._last_frame: float | None = None
        self._last_now: float | None = None
        self.fault: str | None = "no frame yet"  # in doubt until the first good frame

    def _now(self) -> float:
        """The clock, checked: a jump back locks, starts a cooldown and is a fault until the next frame."""
        now = self.clock()
        last, self._last_now = self._last_now, now
        if last is not None and now < last - BACKWARDS_TOLERANCE:
            self.fault = f"clock went back {last - now:.1f} s"
            self._votes.clear()
            self._open_until = self._manual_until = float("-inf")
            self._cooldown_until = now + self.config.cooldown_seconds
            if self._last_frame is not None:
                self._last_frame = now  # staleness counts from here, not from a time that is now "ahead"
        return now

    def observe(self, probability: float | None) -> Verdict:
        """Record one frame: P(positive), or None when the frame has no face (it votes no)."""
        now = self._now()
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
        """An authenticated unlock: open for the open period, whatever the votes or the camera."""
        now = self._now()
        votes = sum(self._votes)
        self._manual_until = now + self.config.open_seconds  # always a new period: it extends an open one
        self._cooldown_until = max(self._cooldown_until, self._manual_until + self.config.cooldown_seconds)
        self._votes.clear()
        return Verdict(True, True, votes, "manual unlock")

    def fail(self, reason: str, *, end_manual: bool = False) -> Verdict:
        """A fault: lock now (a manual period only with ``end_manual``), forget the votes, not ready.

        Camera and model faults leave a manual period running: it never depended on them. A relay fault
        or the loop stopping ends it too (``end_manual``).
        """
        now = self._now()
        self.fault = reason
        self._votes.clear()
        if now < self._open_until or (end_manual and now < self._manual_until):
            self._cooldown_until = now + self.config.cooldown_seconds  # cut short: the cooldown starts now
        self._open_until = float("-inf")
        if end_manual:
            self._manual_until = float("-inf")
        manual = now < self._manual_until
        return Verdict(manual, False, 0, "manual unlock" if manual else reason)

    def tick(self) -> Verdict:
        """Check time-based rules: the open period ending and a stale camera."""
        now = self._now()
        manual = now < self._manual_until
        if self._last_frame is not None and now - self._last_frame > self.config.stale_seconds:
            if self.fault is None or not self.fault.startswith("no frame"):
                self.fail(f"no frame for {now - self._last_frame:.1f} s")
            return Verdict(manual, False, 0, self.fault or "stale")
        if self.fault is not None:
            return Verdict(manual, False, 0, self.fault)
        is_open = self.is_open(now)
        reason = "manual unlock" if manual else "open period" if is_open else "locked"
        return Verdict(is_open, False, sum(self._votes), reason)

    def is_open(self, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        return now < self._open_until or now < self._manual_until

    def ready(self) -> tuple[bool, str]:
        """Ready means able to decide: a fresh frame and no fault."""
        self.tick()
        return (self.fault is None, self.fault or "ready")

    def _start_open(self, now: float) -> None:
        self._open_until = now + self.config.open_seconds
        self._cooldown_until = self._open_until + self.config.cooldown_seconds
        self._votes.clear()  # a new opening needs fresh evidence after the cooldown
