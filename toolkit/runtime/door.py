"""The door loop: camera → (face crop) → classify → k-of-n policy → relay, logging every frame.

Fail closed: a camera error, a stale, frozen or black camera, a malformed frame or a model failure
locks the relay at once and makes the loop not ready (``/v2/health/ready`` answers 503) until a good
frame arrives; a relay that fails keeps it not ready until the relay works again; the relay is locked
when the loop stops for any reason. The model is read from the :class:`ModelHolder` per frame, so a hot
reload takes effect on the next frame (and a reload the door could not use is refused).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.facepipe import NO_FACE
from toolkit.inference.handpipe import NO_HAND
from toolkit.inference.predictor import DEFAULT_THRESHOLD
from toolkit.runtime.actuator import Actuator, RelayError
from toolkit.runtime.camera import CameraError, FrameSource
from toolkit.runtime.core.config import DoorConfig
from toolkit.runtime.core.eventlog import EventLog
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.core.policy import DoorPolicy, Verdict
from toolkit.runtime.snapshots import SnapshotStore, crop_box

log = logging.getLogger("toolkit.runtime")

MIN_FRAME_SIDE = 32  # smaller than this cannot hold a face at door distance: a broken camera mode
BLACK_LEVEL = 8  # no pixel brighter than this: a covered lens, a dead sensor or an empty buffer


def frame_problem(frame, max_pixels: int) -> str | None:
    """Why a camera frame cannot be judged (wrong type, shape, size, or black), or None when it can."""
    if not isinstance(frame, np.ndarray):
        return f"frame is a {type(frame).__name__}, not an image array"
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        return f"frame has dtype {frame.dtype} and shape {frame.shape}, not HxWx3 uint8 RGB"
    h, w = frame.shape[:2]
    if min(h, w) < MIN_FRAME_SIDE or h * w > max_pixels:
        return f"frame is {w}x{h} pixels, outside {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}..{max_pixels:,} pixels"
    if int(frame.max()) <= BLACK_LEVEL:
        return "black frame (lens covered, sensor dead or an empty buffer)"
    return None


class DoorLoop:
    """Runs the door. Thread-safe: the HTTP API calls ``ready`` and ``manual_open`` from its threads.

    Args:
        holder: the serving model (must be a binary sigmoid model).
        source: the camera.
        config: policy, fps, event log, snapshots, reconnect backoff.
        actuator: the relay (``log`` or ``gpio``).
        cropper: optional face crop; returns None when there is no face.
        clock: monotonic seconds (injectable for tests); ``sleep`` and ``wall`` likewise.

    Raises:
        ToolkitError: the model is not a binary model.
    """

    def __init__(
        self,
        holder: ModelHolder,
        source: FrameSource,
        config: DoorConfig,
        actuator: Actuator,
        *,
        cropper: Callable[[np.ndarray], np.ndarray | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        predictor = holder.predictor
        check = _door_check(config.policy.open_on)
        check(predictor)
        self.holder, self.source, self.config, self.actuator = holder, source, config, actuator
        self.cropper, self.clock, self.sleep, self.wall = cropper, clock, sleep, wall
        self.policy = DoorPolicy(config.policy, self._threshold(predictor), clock)
        self.listeners: list[Callable[[str], None]] = []
        self.heartbeats: list[Callable[[], None]] = []  # after each pass of the loop (systemd's watchdog)
        # Called with every logged event, the judged frame (None without one) and the face box: the page's
        # timeline and live view, the snapshots. Run in the loop's thread: they must be quick and not raise.
        self.watchers: list[Callable[[dict, np.ndarray | None, tuple | None], None]] = []
        self._broken_watchers: list = []
        self.frames = 0
        self.repeats = 0  # frames a live camera delivered twice (not counted as new looks)
        self._logged_fault: str | None = None
        self._previous: np.ndarray | None = None
        self._stream = None  # (predictor, its camera stream state): see _stream_for
        self._last_new = clock()
        self._lock = threading.RLock()
        self._backoff = config.reconnect_min_seconds
        holder.checks.append(check)  # a hot reload the door cannot use is refused, not crashed on
        self._events = None
        self.snapshots = None
        if config.snapshots:
            self.snapshots = SnapshotStore(config.snapshots, int(config.snapshot_cap_mb * 1e6), config.snapshot_every,
                                           config.labelled, clock=clock, wall=wall)  # fmt: skip
            self.watchers.append(self.snapshots.observe)
        try:
            if config.event_log:
                Path(config.event_log).parent.mkdir(parents=True, exist_ok=True)
                rotation = config.event_log_rotation
                self._events = EventLog(config.event_log, rotation.event_log_max_bytes, rotation.event_log_backups)
        except OSError as exc:
            raise ToolkitError(
                f"{exc.filename}: cannot write there ({exc.strerror}); fix --event-log/--snapshots"
            ) from exc

    def _threshold(self, predictor) -> float:
        t = self.config.policy.threshold
        if t is not None:
            return t
        open_on = self.config.policy.open_on
        if open_on is not None:  # an adapted version chose this label's threshold on the owner's photos
            return predictor.label_thresholds.get(open_on, DEFAULT_THRESHOLD)
        return predictor.threshold

    def _probability(self, predictor, image: np.ndarray) -> float | None:
        """P(the opening answer) for one frame, or None when it holds no hand (a vote against, as no face)."""
        stream = self._stream_for(predictor)
        p = predictor.predict(image) if stream is None else predictor.predict(image, stream=stream)
        # A face-landmark export finds the face itself (one detector pass): its box is what the page draws.
        self._face_box = ((getattr(p, "details", None) or {}).get("face") or {}).get("box")
        if p.label in (NO_HAND, NO_FACE):
            return None
        open_on = self.config.policy.open_on
        return p.probability if open_on is None else p.probabilities.get(open_on, 0.0)

    def _stream_for(self, predictor):
        """This camera's hand- or face-following state for ``predictor`` (None: each frame alone).

        Only whole frames are followed (a face crop moves with the face), and a new model (hot reload) or a
        gap in the stream (a fault, a reconnect) starts again from the palm (face) detector.
        """
        if not self.config.track or self.cropper is not None:
            return None
        if self._stream is None or self._stream[0] is not predictor:
            opener = getattr(predictor, "stream", None)  # a landmark export's; other models have no state
            self._stream = (predictor, opener() if opener is not None else None)
        return self._stream[1]

    # --- called from the HTTP threads -------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        with self._lock:
            verdict = self.policy.tick()
            self._apply(verdict)
            if self.actuator.fault:
                return False, self.actuator.fault
            return self.policy.ready()

    def manual_open(self) -> dict:
        """An authenticated unlock for the open period.

        Raises:
            RelayError: the relay did not unlock (the door is locked and not ready).
        """
        with self._lock:
            verdict = self._apply(self.policy.manual_open())
            self._log_event(None, verdict, 0.0, manual=verdict.opened)
            if not verdict.opened or self.actuator.fault:
                raise RelayError(self.actuator.fault or "relay: unlock failed; the door stays locked")
            self._emit("manual_open")
            return {"state": "open", "seconds": self.config.policy.open_seconds}

    # --- the loop ---------------------------------------------------------------------------------
    def step(self) -> bool:
        """Read and judge one frame. Returns False when a finite source has ended."""
        try:
            frame = self.source.read()
        except Exception as exc:  # CameraError, or whatever a driver throws: the same lost camera
            self.fault(f"camera: {exc}")
            self.reconnect()
            return True
        if frame is None:
            return False
        self._backoff = self.config.reconnect_min_seconds
        self.frames += 1
        problem = frame_problem(frame, self.holder.config.max_pixels)
        if problem is not None:
            self.fault(f"camera: {problem}")
            return True
        if self.source.live:
            if self._previous is not None and np.array_equal(frame, self._previous):
                self.repeats += 1
                frozen = self.clock() - self._last_new
                if frozen > self.config.policy.stale_seconds:
                    self.fault(f"camera: frozen, the same frame for {frozen:.1f} s")
                return True  # not a new look: it neither votes nor keeps the camera fresh
            self._previous, self._last_new = frame.copy(), self.clock()  # a copy: drivers reuse buffers
        predictor = self.holder.predictor  # one model for the whole frame, even if a reload lands now
        start = time.perf_counter()
        probability = None
        self._face_box = None  # set by _probability for an export that finds the face itself
        try:
            crop = self.cropper(frame) if self.cropper else frame
            if crop is not None:
                probability = self._probability(predictor, crop)
        except Exception as exc:  # any crop or model failure, expected or not, must lock the door
            self.fault(f"model failure: {exc}")
            return True
        if probability is not None and not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            self.fault(f"model failure: probability {probability} is not in 0..1")
            return True
        latency = (time.perf_counter() - start) * 1000.0
        with self._lock:
            self.policy.threshold = self._threshold(predictor)  # a hot reload may bring a new threshold
            verdict = self._apply(self.policy.observe(probability))
            if self.policy.fault is None:
                self._logged_fault = None  # a good frame: the next fault is news again
        if crop is None:
            self._emit("no_face")
        elif probability is None:
            self._emit("no_hand")
        box = crop_box(frame, crop)
        if box is None and self._face_box is not None:
            box = tuple(int(round(v)) for v in self._face_box)
        self._log_event(probability, verdict, latency, frame=frame, box=box)
        return True

    def tick(self) -> Verdict:
        """Apply time-based rules (open period over, stale camera) without a frame."""
        with self._lock:
            return self._apply(self.policy.tick())

    def fault(self, reason: str, level: int = logging.ERROR, *, end_manual: bool = False) -> None:
        """Lock now (a manual unlock keeps its period unless ``end_manual``) and stay not-ready until a good frame.

        Logged once per kind of fault until a good frame: a camera that sends black frames at 30 fps must
        not write 30 lines a second to a Pi's SD card (the event log still has every frame).
        """
        self._stream = None  # the frames after a fault are not the sequence before it
        kind = re.sub(r"[0-9.]+", "#", reason)
        if kind != self._logged_fault:
            self._logged_fault = kind
            log.log(level, "door locked: %s", reason)
        with self._lock:
            verdict = self._apply(self.policy.fail(reason, end_manual=end_manual))
        self._emit("fault")
        self._log_event(None, verdict, 0.0)

    def reconnect(self) -> None:
        """Reopen the camera after a pause that doubles on each failure (capped)."""
        self.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, self.config.reconnect_max_seconds)
        try:
            self.source.close()
            self.source.open()
        except CameraError as exc:
            log.warning("reconnect failed: %s", exc)

    def run(self, stop: threading.Event | None = None) -> int:
        """Loop until the source ends, ``max_frames`` is reached or ``stop`` is set; returns frames seen.

        The relay is locked on the way out, whatever the reason.
        """
        stop = stop or threading.Event()
        ticker = threading.Thread(target=self._tick_loop, args=(stop,), name="door-tick", daemon=True)
        try:
            self.source.open()
        except CameraError as exc:
            self.fault(f"camera: {exc}")
            self.reconnect()
        ticker.start()
        period = 1.0 / self.config.fps if self.config.fps > 0 else 0.0
        try:
            while not stop.is_set():
                started = self.clock()
                if not self.step():
                    break
                for beat in self.heartbeats:  # from this thread: a loop hung in read() or the model stops them
                    beat()
                if self.config.max_frames and self.frames >= self.config.max_frames:
                    break
                if period:
                    self.sleep(max(0.0, period - (self.clock() - started)))
        finally:
            stop.set()
            # A normal stop too must leave the door locked, a manual unlock included.
            self.fault("door loop stopped", logging.INFO, end_manual=True)
            self.actuator.lock()
            self.source.close()
        return self.frames

    def close(self) -> None:
        self.actuator.close()
        if self._events is not None:
            self._events.close()
            self._events = None

    def _tick_loop(self, stop: threading.Event) -> None:
        # Closes the door on time and notices a stale camera even when read() blocks.
        while not stop.wait(0.1):
            self.tick()

    def _apply(self, verdict: Verdict) -> Verdict:
        """Drive the relay to what the policy says; returns what really happened (a relay failure is a fault)."""
        relay = self.actuator
        if verdict.opened:
            # Only a new decision energises the relay; a new period (a manual unlock while open) re-arms
            # its watchdog too.
            was_unlocked = relay.unlocked
            try:
                relay.unlock(self.config.policy.open_seconds)
            except RelayError as exc:
                self._emit("fault")
                return self.policy.fail(str(exc), end_manual=True)
            if not was_unlocked:
                self._emit("open")
        elif verdict.open:
            if not relay.unlocked:
                # Locked behind the policy's back: the relay's real-time watchdog fired first, so the
                # policy's clock is wrong. Never energise again on the strength of that period.
                self._emit("fault")
                reason = "relay watchdog locked the door before the open period ended"
                return self.policy.fail(reason, end_manual=True)
        elif relay.unlocked or relay.fault:
            was_unlocked = relay.unlocked
            if relay.lock():
                if was_unlocked:
                    self._emit("lock")
            elif self.policy.fault != relay.fault:
                self._emit("fault")
                return self.policy.fail(relay.fault or "relay: lock failed", end_manual=True)
        return verdict

    def _emit(self, event: str) -> None:
        for listener in self.listeners:
            listener(event)

    def _log_event(self, probability: float | None, verdict: Verdict, latency_ms: float, manual: bool = False,
                   frame: np.ndarray | None = None, box: tuple | None = None) -> None:
        event = {
            "time": round(self.wall(), 3),
            "probability": None if probability is None else round(probability, 5),
            "decision": "manual_open" if manual else "open" if verdict.open else "locked",
            "opened": verdict.opened,  # True on the frame that started an open period
            "votes": verdict.votes,
            "reason": verdict.reason,
            "latency_ms": round(latency_ms, 3),
        }
        if self._events is not None:
            line = json.dumps(event) + "\n"
            if not self._events.write(line) and (verdict.opened or manual) and self.snapshots is not None:
                # An opening's record outranks routine samples: on a full disk it evicts some and tries again.
                if self.snapshots.make_room(64 << 10):
                    self._events.write(line)
        for watcher in self.watchers:
            try:
                watcher(event, frame, box)
            except Exception:  # the page or a full disk must never stop the door
                # Logged once per watcher: a broken one would otherwise write a traceback per frame.
                if watcher not in self._broken_watchers:
                    self._broken_watchers.append(watcher)
                    log.exception("door watcher failed (logged once)")


def _door_check(open_on: str | None) -> Callable:
    """The check a model must pass to drive this door: a binary model, or one whose labels hold ``open_on``."""
    if open_on is None:
        return _binary_only

    def has_label(predictor) -> None:
        if open_on not in predictor.labels:
            raise ToolkitError(f"--open-on {open_on}: {predictor.folder} has no such label; "
                               f"choose one of {', '.join(predictor.labels)}")

    return has_label


def _binary_only(predictor) -> None:
    if predictor.threshold is None:
        raise ToolkitError(
            f"{predictor.folder}: output_kind {predictor.manifest.output_kind!r} has no yes/no answer; "
            "the door needs a binary (sigmoid) export"
        )
