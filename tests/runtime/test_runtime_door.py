"""Door policy (fake clock), actuators (gpiozero MockFactory), the loop with an image-folder camera."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runtime_support import frame

from toolkit.errors import ToolkitError
from toolkit.runtime.actuator import GpioActuator, LogActuator, make_actuator
from toolkit.runtime.camera import CameraError, FolderSource, FrameSource, make_cropper, open_source
from toolkit.runtime.core.config import DoorConfig, ModelConfig, PolicyConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.core.policy import DoorPolicy
from toolkit.runtime.door import DoorLoop

HAPPY, SAD = 220, 40


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class ListSource(FrameSource):
    """Frames from a list; the string 'error' raises CameraError (a lost camera)."""

    def __init__(self, frames) -> None:
        self.frames = list(frames)
        self.opened = 0

    def open(self) -> None:
        self.opened += 1

    def read(self):
        if not self.frames:
            return None
        f = self.frames.pop(0)
        if isinstance(f, str):
            raise CameraError("USB camera unplugged")
        return f


@pytest.fixture
def mock_pins():
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    old = Device.pin_factory
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = old


def test_policy_k_of_n_open_period_and_cooldown():
    clock = FakeClock()
    cfg = PolicyConfig(k=3, n=5, open_seconds=2.0, cooldown_seconds=3.0, stale_seconds=10)
    p = DoorPolicy(cfg, threshold=0.8, clock=clock)
    assert p.ready() == (False, "no frame yet")
    # Two happy frames and a sad one: not enough; one lucky frame never opens.
    assert [p.observe(x).open for x in (0.9, 0.1, 0.95)] == [False, False, False]
    assert p.observe(0.79).open is False  # just below threshold votes no
    v = p.observe(0.8)  # third happy frame of the last five
    assert v.open and v.opened and v.votes == 3
    clock.advance(1.9)
    assert p.tick().open
    clock.advance(0.2)
    assert not p.tick().open  # the open period is over
    for _ in range(5):  # cooldown: even a run of happy frames keeps it locked
        assert p.observe(0.99).reason in ("cooldown",)
    clock.advance(3.0)
    assert p.observe(0.99).opened  # after the cooldown, fresh evidence opens it again
    # None (no face) votes no
    p2 = DoorPolicy(PolicyConfig(k=2, n=2), 0.5, clock)
    assert not p2.observe(0.9).open and not p2.observe(None).open and not p2.observe(0.9).open


def test_policy_fails_closed_on_faults_and_stale_camera():
    clock = FakeClock()
    p = DoorPolicy(PolicyConfig(k=1, n=1, open_seconds=5, cooldown_seconds=1, stale_seconds=2), 0.5, clock)
    assert p.observe(0.9).open and p.ready()[0]
    v = p.fail("model failure: boom")
    assert not v.open and not p.is_open() and p.ready() == (False, "model failure: boom")
    assert p.observe(0.1).open is False and p.ready()[0]  # a good frame clears the fault
    assert p.observe(0.9).reason == "cooldown"  # the cut-short opening's cooldown starts at the fault
    clock.advance(1.1)
    assert p.observe(0.9).open
    clock.advance(2.5)  # no frame for longer than stale_seconds: locked, not ready
    v = p.tick()
    assert not v.open and v.reason.startswith("no frame for 2.5 s")
    assert p.ready()[0] is False
    m = p.manual_open()
    assert m.open and m.opened and p.is_open()


def test_gpio_relay_pin_sequence(mock_pins):
    relay = make_actuator("gpio", pin=17)
    pin = mock_pins.pin(17)
    relay.unlock(5)
    relay.unlock(5)  # already open: no glitch on the pin
    relay.lock()
    relay.lock()
    pin.assert_states([False, True, False])
    relay.close()
    low = GpioActuator(27, active_high=False)  # relay boards that energise on a low pin
    low.unlock(5)
    low.lock()
    # The mock pin starts low before it is claimed; claiming an active-low relay drives it high (locked).
    mock_pins.pin(27).assert_states([False, True, False, True])
    low.close()


def test_watchdog_locks_even_if_nobody_does():
    relay = LogActuator()
    relay.unlock(max_seconds=0.01)  # locks at 0.51 s
    assert relay.unlocked
    for _ in range(100):
        if not relay.unlocked:
            break
        threading.Event().wait(0.02)
    assert relay.history == [True, False]


def test_make_actuator_errors():
    with pytest.raises(ToolkitError, match="choose 'log' or 'gpio'"):
        make_actuator("servo")


def _loop(holder, frames, mock_pins, tmp_path, **policy):
    clock = FakeClock()
    cfg = DoorConfig(
        camera="test",
        policy=PolicyConfig(**{"k": 2, "n": 3, "open_seconds": 1.0, "cooldown_seconds": 1.0, **policy}),
        event_log=tmp_path / "events.jsonl",
        snapshots=tmp_path / "snaps",
        snapshot_every=1.0,
    )
    relay = GpioActuator(17)
    sleeps: list[float] = []
    loop = DoorLoop(holder, ListSource(frames), cfg, relay, clock=clock, sleep=sleeps.append, wall=lambda: 1.7e9)
    return loop, clock, mock_pins.pin(17), sleeps


def test_loop_opens_on_k_of_n_then_locks(export_dir, mock_pins, tmp_path):
    holder = ModelHolder(ModelConfig(export_dir))
    frames = [frame(v) for v in (SAD, HAPPY, SAD, HAPPY, SAD, SAD, SAD)]
    loop, clock, pin, _ = _loop(holder, frames, mock_pins, tmp_path)
    events: list[str] = []
    loop.listeners.append(events.append)
    states = []
    while loop.step():
        states.append(pin.state)
        clock.advance(0.4)
        loop.tick()
    # Frame 4 is the second happy frame of the last three: open for 1 s (frames 4, 5, 6), then locked.
    assert states == [0, 0, 0, 1, 1, 1, 0]
    pin.assert_states([False, True, False])
    assert events.count("open") == 1 and events.count("lock") == 1
    log = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(log) == 7 and log[3]["opened"] is True and log[3]["decision"] == "open"
    assert log[0]["probability"] < 0.1 < 0.9 < log[1]["probability"] and log[0]["latency_ms"] > 0
    # The frame that opened the door, and one frame a second (0.4 s apart) of the others: frames 0 and 4.
    kept = loop.snapshots.list()
    assert [s["decision"] for s in kept] == ["open", "open", "locked"] and [s["opened"] for s in kept][1] is True
    assert kept[1]["probability"] > 0.9 and kept[2]["probability"] < 0.1
    assert sorted(p.suffix for p in (tmp_path / "snaps").iterdir()) == [".jpg"] * 3 + [".json"] * 3
    assert loop.ready()[0] is True


def test_loop_fails_closed_on_camera_loss_and_model_failure(export_dir, mock_pins, tmp_path):
    holder = ModelHolder(ModelConfig(export_dir))
    frames = [frame(HAPPY), frame(HAPPY), "error", "error", frame(HAPPY), frame(HAPPY)]
    loop, clock, pin, sleeps = _loop(holder, frames, mock_pins, tmp_path, open_seconds=30)
    assert loop.step() and loop.step()
    assert pin.state == 1
    assert loop.step()  # camera lost: locked at once, not ready, reconnect after backoff
    assert pin.state == 0 and loop.ready() == (False, "camera: USB camera unplugged")
    assert loop.step()
    assert sleeps == [0.5, 1.0]  # backoff doubles
    assert loop.source.opened == 2
    clock.advance(1.1)  # past the cooldown of the opening the fault cut short
    assert loop.step() and loop.step()  # the camera is back and two happy frames reopen it
    assert pin.state == 1 and loop.ready()[0]

    class Broken:
        threshold = 0.5

        def predict(self, _):
            raise RuntimeError("onnxruntime: out of memory")

    holder._predictor, real = Broken(), holder._predictor
    loop.source.frames = [frame(HAPPY)]
    loop.step()
    assert pin.state == 0 and loop.ready() == (False, "model failure: onnxruntime: out of memory")
    holder._predictor = real
    pin.assert_states([False, True, False, True, False])


def test_manual_open_while_open_rearms_the_relay(export_dir, tmp_path):
    class Counting(LogActuator):
        def __init__(self) -> None:
            super().__init__()
            self.unlocks = 0

        def unlock(self, max_seconds: float) -> None:
            self.unlocks += 1
            super().unlock(max_seconds)

    relay = Counting()
    clock = FakeClock()
    cfg = DoorConfig(camera="x", policy=PolicyConfig(k=1, n=1, open_seconds=2.0, cooldown_seconds=0, stale_seconds=10))
    loop = DoorLoop(ModelHolder(ModelConfig(export_dir)), ListSource([frame(HAPPY)]), cfg, relay, clock=clock)
    loop.step()
    clock.advance(1.5)
    loop.manual_open()  # extends the open period: the watchdog must be re-armed, the pin must not glitch
    assert relay.unlocks == 2 and relay.history == [True]
    clock.advance(1.0)
    assert loop.tick().open and relay.unlocked  # still inside the manual period (1.5 + 2.0)
    clock.advance(1.1)
    assert not loop.tick().open and relay.history == [True, False]
    loop.close()


def test_loop_stale_camera_locks(export_dir, mock_pins, tmp_path):
    holder = ModelHolder(ModelConfig(export_dir))
    loop, clock, pin, _ = _loop(holder, [frame(HAPPY)] * 2, mock_pins, tmp_path, open_seconds=30, stale_seconds=2)
    loop.step()
    loop.step()
    assert pin.state == 1
    clock.advance(2.5)  # the camera hangs: no frames
    loop.tick()
    assert pin.state == 0 and loop.ready()[1].startswith("no frame")


def test_run_with_folder_source_and_manual_open(export_dir, tmp_path):
    cam = tmp_path / "cam"
    cam.mkdir()
    for i, v in enumerate([SAD, HAPPY, HAPPY, HAPPY, SAD]):
        Image.fromarray(frame(v)).save(cam / f"{i:03d}.png")
    (cam / "005.jpg").write_bytes(b"corrupt")  # skipped with a warning
    holder = ModelHolder(ModelConfig(export_dir))
    relay = LogActuator()
    cfg = DoorConfig(camera=str(cam), policy=PolicyConfig(k=2, n=3, open_seconds=60))
    loop = DoorLoop(holder, open_source(str(cam)), cfg, relay)
    assert loop.run() == 5
    assert relay.history == [True, False] and not relay.unlocked  # locked again when the loop stops
    assert loop.ready() == (False, "door loop stopped")
    assert loop.manual_open()["state"] == "open" and relay.unlocked
    loop.close()
    assert not relay.unlocked


def test_sources_and_cropper(tmp_path, softmax_dir):
    with pytest.raises(ToolkitError, match="no such file or folder"):
        open_source(str(tmp_path / "nope"))
    with pytest.raises(ToolkitError, match="no images"):
        FolderSource(tmp_path)
    Image.fromarray(frame(10)).save(tmp_path / "a.png")
    src = FolderSource(tmp_path, loop=True)
    assert all(src.read() is not None for _ in range(3))
    cropper = make_cropper("haar")
    assert cropper(frame(128, (240, 320))) is None  # a blank wall: no face, no vote
    with pytest.raises(ToolkitError, match="choose 'none', 'haar' or 'blazeface'"):
        make_cropper("dnn")
    with pytest.raises(ToolkitError, match="needs a binary"):
        DoorLoop(ModelHolder(ModelConfig(softmax_dir)), src, DoorConfig(camera="x"), LogActuator())


def test_opencv_video_file_source(tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for v in (30, 200, 30):
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., 2] = v  # red in BGR
        writer.write(img)
    writer.release()
    src = open_source(str(path))
    src.open()
    first = src.read()
    assert first.shape == (48, 64, 3) and first[..., 0].mean() > first[..., 2].mean() - 5  # RGB, not BGR
    assert src.read() is not None and src.read() is not None and src.read() is None  # end of file
    src.close()
    bad = open_source("12345" if False else "rtsp://127.0.0.1:1/none")
    with pytest.raises(CameraError):
        bad.open()


SMILES = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smiles" / "smile"


@pytest.mark.datasets
@pytest.mark.skipif(not SMILES.is_dir(), reason="../shared/datasets/smiles is absent")
def test_haar_finds_the_face_in_a_door_frame():
    cropper = make_cropper("haar")
    found = 0
    files = sorted(SMILES.glob("*.jpg"))[:8]
    for f in files:
        face = np.asarray(Image.open(f).convert("RGB").resize((200, 200)))
        scene = np.full((480, 640, 3), 90, np.uint8)  # a door frame with the face off-centre
        scene[140:340, 300:500] = face
        box = cropper.box(scene)
        if box is not None:
            found += 1
            x, y, w, h = box
            assert 300 <= x + w / 2 <= 500 and 140 <= y + h / 2 <= 340  # centred on the pasted face
            crop = cropper(scene)
            assert crop.shape[0] > h and crop.shape[1] > w  # with a margin
    assert found >= len(files) // 2


def test_picamera2_source_with_a_stand_in(monkeypatch):
    import sys
    import types

    class FakePicamera2:
        def __init__(self) -> None:
            self.started = False

        def create_preview_configuration(self, main):
            return main

        def configure(self, config) -> None:
            self.size = config["size"]

        def start(self) -> None:
            self.started = True

        def capture_array(self):
            w, h = self.size
            bgr = np.zeros((h, w, 3), np.uint8)
            bgr[..., 0] = 255  # libcamera "RGB888" is B, G, R in memory
            return bgr

        def close(self) -> None:
            self.started = False

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    src = open_source("picamera2")
    src.open()
    rgb = src.read()
    assert rgb.shape == (480, 640, 3) and rgb[..., 2].min() == 255 and rgb[..., 0].max() == 0  # blue, as RGB
    src.close()
    with pytest.raises(CameraError, match="not started"):
        src.read()


def test_unwritable_event_log_is_a_user_error(export_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = DoorConfig(camera="x", event_log=blocker / "sub" / "events.jsonl")
    with pytest.raises(ToolkitError, match="cannot write there"):
        DoorLoop(ModelHolder(ModelConfig(export_dir)), ListSource([]), cfg, LogActuator())


def test_per_visit_false_accepts_under_k_of_n_bracket_the_truth():
    from toolkit.runtime.core.policy import visit_far

    v = visit_far(0.1, 3, 5)  # P(X >= 3), X ~ Bin(5, 0.1) = 10 * 0.001 * 0.81 + 5 * 0.0001 * 0.9 + 0.00001
    assert v["independent_frames"] == pytest.approx(0.00856) and v["identical_frames"] == 0.1
    assert visit_far(0.1, 1, 1)["independent_frames"] == pytest.approx(0.1)  # one frame decides: no gain
    assert visit_far(0.0, 3, 5)["independent_frames"] == 0 and visit_far(1.0, 3, 5)["independent_frames"] == 1
    rates = [visit_far(0.05, k, 5)["independent_frames"] for k in range(1, 6)]
    assert rates == sorted(rates, reverse=True)  # more votes needed, fewer false accepts


def test_a_failing_watcher_never_stops_the_door(export_dir, tmp_path, caplog):
    seen = []

    def broken(event, frame, box):
        raise RuntimeError("page crashed")

    loop = DoorLoop(ModelHolder(ModelConfig(export_dir)), ListSource([frame(HAPPY)] * 3), DoorConfig(camera="x"),
                    LogActuator())  # fmt: skip
    loop.watchers += [broken, lambda event, frame, box: seen.append((event["probability"], frame.shape, box))]
    assert loop.step() and loop.step() and loop.step()
    assert len(seen) == 3 and seen[0][0] > 0.9 and seen[0][1] == (120, 160, 3) and seen[0][2] is None  # no crop
    assert caplog.text.count("door watcher failed") == 1
