"""What the door's page shows: its state, the last decisions and faults, and the live view (TF-free, no fastapi).

A watcher of the :class:`~toolkit.runtime.door.DoorLoop`: it is called with every event the loop logs and
keeps the last ones in memory, so the page works with the event log off. The live frame is copied only
while someone looks at it (a copy per frame costs the door time for nobody).
"""

from __future__ import annotations

import functools
import io
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

LIVE_IDLE_SECONDS = 10.0  # no live-view request for this long: stop copying frames
# The live view is a picture refreshed about once a second on a phone: a frame copied at most this often, and
# drawn at most this wide, keep its cost to the door's core small whatever the camera's resolution and frame rate
# (measured: one encode per frame at 640x480 and 10 frames/s added ~15 % to the door's decision p99).
LIVE_EVERY_SECONDS = 0.5
LIVE_MAX_WIDTH = 640
FPS_WINDOW_SECONDS = 5.0


class DoorStatus:
    """The door's recent past for the page.

    Args:
        door: the :class:`~toolkit.runtime.door.DoorLoop` watched (None: a server without a door).
        holder: the serving model's holder (model file, threshold, labels).
        keep: decisions (and faults) kept for the timeline.
        clock: monotonic seconds.
    """

    def __init__(self, door: Any, holder: Any, keep: int = 100, clock: Callable[[], float] = time.monotonic) -> None:
        self.door, self.holder, self.clock = door, holder, clock
        self.started = clock()
        self.decisions: deque[dict] = deque(maxlen=keep)
        self.faults: deque[dict] = deque(maxlen=keep)
        self._frame_times: deque[float] = deque(maxlen=1000)
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self._look: dict | None = None
        self._watched = float("-inf")
        self._copied = float("-inf")  # when the loop last copied a frame for the live view
        self._seq = 0  # frames copied for the live view...
        self._jpeg: tuple[int, bytes] | None = None  # ...and the last one drawn: many viewers, one encode per frame
        self.last_latency_ms: float | None = None
        self.version = 0  # bumped with every event recorded: the page's answers are cached per version
        if door is not None and hasattr(door, "watchers"):  # stand-ins in tests may only answer ready()
            door.watchers.append(self.observe)

    # --- the door loop's side ---------------------------------------------------------------------
    def observe(self, event: dict, frame: np.ndarray | None, box: tuple | None) -> None:
        """Record one event of the loop (called in the loop's thread)."""
        now = self.clock()
        fault = self.door.policy.fault if self.door is not None else None
        with self._lock:
            self.version += 1
            if frame is not None:
                self._frame_times.append(now)
                self.last_latency_ms = event.get("latency_ms")
                policy = self.door.config.policy
                self.decisions.append({**event, "k": policy.k, "n": policy.n, "box": list(box) if box else None})
                if now - self._watched < LIVE_IDLE_SECONDS and now - self._copied >= LIVE_EVERY_SECONDS:
                    self._copied = now
                    self._frame = frame.copy()  # drivers reuse their buffers
                    self._seq += 1
                    self._look = {"box": box, "probability": event.get("probability"), "time": event.get("time")}
            elif fault and event.get("decision") != "manual_open":
                if not self.faults or self.faults[-1]["reason"] != fault:
                    self.faults.append({"time": event.get("time"), "reason": fault})
            else:
                self.decisions.append({**event, "k": None, "n": None, "box": None})

    # --- the page's side --------------------------------------------------------------------------
    def fps(self) -> float:
        now = self.clock()
        with self._lock:
            recent = [t for t in self._frame_times if now - t <= FPS_WINDOW_SECONDS]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(now - recent[0], 1e-6)

    def state(self) -> dict:
        """The door's state for ``GET /door/state``: lock, readiness, model, rates, speed."""
        p = self.holder.predictor
        entry = p.manifest.files.get(p.file)
        out = {
            "state": "no door",
            "ready": True,
            "reason": "model loaded",
            "model": p.name,
            "file": p.file,
            "version": p.version["id"] if p.version else None,
            "labels": list(p.manifest.labels),
            "threshold": p.threshold,
            "far": (p.version or {}).get("far") if p.version else entry.far if entry is not None else None,
            "frr": (p.version or {}).get("frr") if p.version else entry.frr if entry is not None else None,
            "rates": _rates(p.version, entry),
            "uptime_seconds": round(self.clock() - self.started, 1),
            "fps": round(self.fps(), 2),
            "last_latency_ms": self.last_latency_ms,
            "votes": None,
            "window": None,
        }
        door = self.door
        if door is None:
            return out
        ready, reason = door.ready()
        fault = door.actuator.fault or door.policy.fault
        state = "open" if door.actuator.unlocked else "locked by fault" if fault else "locked"
        out.update(state=state, ready=ready, reason=reason, threshold=door.policy.threshold,
                   votes=door.config.policy.k, window=door.config.policy.n)  # fmt: skip
        return out

    def timeline(self, limit: int = 50) -> dict:
        with self._lock:
            return {"decisions": list(self.decisions)[-limit:][::-1], "faults": list(self.faults)[-limit:][::-1]}

    def live_jpeg(self) -> bytes | None:
        """The last frame with the face box and the probability drawn on it, or None before the first one."""
        from PIL import Image, ImageDraw

        with self._lock:
            self._watched = self.clock()
            frame, look, seq, cached = self._frame, self._look, self._seq, self._jpeg
        if frame is None or look is None:
            return None
        if cached is not None and cached[0] == seq:
            return cached[1]
        image = Image.fromarray(frame)
        factor = -(-image.width // LIVE_MAX_WIDTH)  # a whole factor: Image.reduce is a cheap box filter
        box = look["box"]
        if factor > 1:
            image = image.reduce(factor)
            box = [round(v / factor) for v in box] if box else box
        draw = ImageDraw.Draw(image)
        p = look["probability"]
        happy = p is not None and self.door is not None and p >= self.door.policy.threshold
        colour = (40, 200, 80) if happy else (230, 60, 50)
        if box:
            draw.rectangle(box, outline=colour, width=max(2, image.width // 200))
        label = "no face" if p is None else f"p = {p:.3f}"
        size = max(12, image.height // 18)
        font = _font(size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), label, font=font)
        x, y = (box[0], max(0, box[1] - (y1 + 4))) if box else (4, 4)
        draw.rectangle((x, y, x + x1 + 6, y + y1 + 4), fill=(0, 0, 0))
        draw.text((x + 3, y + 2), label, fill=colour, font=font)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=80)
        self._jpeg = (seq, buf.getvalue())
        return self._jpeg[1]


@functools.lru_cache(maxsize=4)
def _font(size: int):
    """The label's font, loaded once per size (a frame size gives one)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a legible size on a phone
    except (TypeError, OSError):
        return ImageFont.load_default()


def _rates(version: dict | None, entry) -> str | None:
    """FAR / FRR as a person reads them: with the counts behind them, a FAR of 0 as its bound (never "0.0000")."""
    from toolkit.metrics import rate_text

    if version:  # the counts sit with the threshold the version decides with
        chosen = [t for t in (version.get("thresholds") or {}).values()
                  if t and t.get("threshold") == version.get("threshold")]  # fmt: skip
        counts = chosen[0] if chosen else {}
        far, frr, negatives, positives = version.get("far"), version.get("frr"), counts.get("negatives"), counts.get(
            "positives")
    elif entry is not None:
        validation = entry.validation or {}
        far, frr, negatives, positives = entry.far, entry.frr, validation.get("negatives"), validation.get("positives")
    else:
        return None
    if far is None:
        return None
    text = f"FAR {rate_text(far, negatives)}"
    return text if frr is None else f"{text} / FRR {rate_text(frr, positives)}"
