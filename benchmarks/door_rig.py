"""The door the fault drill (:mod:`benchmarks.door_faults`) strikes: the real loop, a scripted camera, a mock relay pin.

The real door loop as in production (its own thread, the 0.1 s ticker, the relay watchdog) with the
export's real ONNX model and a gpiozero ``OutputDevice`` relay on a mock pin (gpiozero's ``MockFactory``)
that records every change with its time. The camera is scripted: a smiling or a neutral scene at a fixed
frame rate that can stall, disconnect, freeze, or send black, malformed or tiny frames. The scene, not
the model, says what a frame shows: the model runs on every frame (its cost and failures are real), then
its probability is replaced by the scene's, so the drill does not depend on what an export makes of
synthetic frames.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.runtime.camera import CameraError, FrameSource
from toolkit.runtime.core.config import DoorConfig, ModelConfig, PolicyConfig
from toolkit.runtime.core.holder import ModelHolder

RELAY_PIN = 17


@dataclass(frozen=True)
class DrillTimings:
    fps: float = 50.0  # the scripted camera's frame rate
    k: int = 3
    n: int = 5
    open_seconds: float = 0.6  # longer than stale + tick: a stall must lock before the period ends anyway
    cooldown_seconds: float = 0.3
    stale_seconds: float = 0.25
    fault_seconds: float = 0.8  # how long each fault lasts
    tick: float = 0.1  # the door loop's ticker period
    slack: float = 0.25  # scheduling delay allowed on a busy machine (less than the watchdog's 0.5 s)


class DrillCamera(FrameSource):
    """A live camera with a scripted scene and scripted faults (``mode``)."""

    live = True
    size = (120, 160)

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.mode = "ok"  # ok | stall | frozen | disconnect | black | corrupt | tiny
        self.happy = False
        self._count = 0
        self._next = time.monotonic()
        self._frozen: np.ndarray | None = None
        self._rng = np.random.default_rng(0)

    def open(self) -> None:
        if self.mode == "disconnect":
            raise CameraError("camera not found")

    def read(self) -> np.ndarray:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # a sensor delivers at its frame rate
        self._next = max(self._next + self.period, time.monotonic())
        while self.mode == "stall":  # a hung driver: read() blocks
            time.sleep(0.01)
        mode, self._count = self.mode, self._count + 1
        h, w = self.size
        if mode == "disconnect":
            raise CameraError("USB camera unplugged")
        if mode == "black":  # a dark sensor's noise: every frame differs, so only the black check sees it
            return self._rng.integers(0, 5, (h, w, 3), dtype=np.uint8)
        if mode == "tiny":
            return np.full((8, 8, 3), 200, np.uint8)
        if mode == "corrupt":
            bad = [np.full((h, w, 3), np.nan, np.float32), np.full((h, w, 4), 200, np.uint8)]
            return [*bad, np.full((h, w), 200, np.uint8)][self._count % 3]
        if mode == "frozen":
            if self._frozen is None:
                self._frozen = self._scene()
            return self._frozen.copy()  # the same pixels in a fresh buffer, as a stuck driver hands out
        self._frozen = None
        return self._scene()

    def _scene(self) -> np.ndarray:
        frame = np.full((*self.size, 3), 200 if self.happy else 60, np.uint8)
        frame[0, 0, :2] = self._count % 256, self._count // 256 % 256  # no two frames alike, like sensor noise
        return frame


class _SceneModel:
    """The real predictor with its probability replaced by the scene's (a bright frame smiles)."""

    def __init__(self, real, rig: Rig) -> None:
        self._real, self._rig = real, rig

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def predict(self, frame):
        if self._rig.model_fails:
            raise RuntimeError("onnxruntime: Non-zero status code returned while running Conv node")
        prediction = self._real.predict(frame)
        return dataclasses.replace(prediction, probability=0.99 if float(np.mean(frame)) > 128 else 0.01)


class _SceneHolder(ModelHolder):
    rig: Rig

    @property
    def predictor(self):
        return _SceneModel(self._predictor, self.rig)


def pin_class():
    from gpiozero.pins.mock import MockPin

    class DrillPin(MockPin):
        """A mock pin that records (monotonic time, state) and can refuse a state like a failing driver."""

        def __init__(self, factory, info) -> None:
            self.refuse: set[bool] = set()
            self.history: list[tuple[float, bool]] = []
            super().__init__(factory, info)
            self.history.append((time.monotonic(), bool(self._state)))

        def _set_state(self, value) -> None:
            if bool(value) in self.refuse:
                raise RuntimeError("relay driver not responding")
            super()._set_state(value)

        def _change_state(self, value) -> bool:
            changed = super()._change_state(value)
            if changed:
                self.history.append((time.monotonic(), bool(value)))
            return changed

    return DrillPin


class _JumpClock:
    """time.monotonic plus an offset the drill can jump."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class Rig:
    """One door: scripted camera, the export's model, a gpio relay on a mock pin, the loop in a thread."""

    def __init__(self, folder: Path, t: DrillTimings, factory, events: Path) -> None:
        from toolkit.runtime.actuator import GpioActuator
        from toolkit.runtime.door import DoorLoop

        self.t, self.folder, self.events = t, folder, events
        self.camera = DrillCamera(t.fps)
        self.clock = _JumpClock()
        self.wall_offset = 0.0
        self.model_fails = False
        self.holder = _SceneHolder(ModelConfig(folder))
        self.holder.rig = self
        policy = PolicyConfig(t.k, t.n, None, t.open_seconds, t.cooldown_seconds, t.stale_seconds)
        config = DoorConfig(
            camera="drill", policy=policy, relay="gpio", relay_pin=RELAY_PIN, event_log=events,
            reconnect_min_seconds=0.05, reconnect_max_seconds=0.2,
        )  # fmt: skip
        factory.reset()
        self.relay = GpioActuator(RELAY_PIN)
        self.pin = factory.pin(RELAY_PIN)
        self.loop = DoorLoop(
            self.holder, self.camera, config, self.relay, clock=self.clock, wall=lambda: time.time() + self.wall_offset
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop,), name="drill-door", daemon=True)

    def ready(self) -> bool:
        return self.loop.ready()[0]  # what GET /v2/health/ready asks

    def energised(self) -> bool:
        return bool(self.pin.state)
