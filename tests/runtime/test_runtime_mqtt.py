"""The door on MQTT against a real broker (mosquitto) and a real subscriber: Home Assistant discovery, retained
state, availability and its last will, token-checked unlock commands; and a door that keeps deciding when the
broker is away or the network stalls."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from mqtt_support import Broker, Recorder
from PIL import Image
from runtime_support import frame

from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.runtime.actuator import make_actuator
from toolkit.runtime.camera import open_source
from toolkit.runtime.core.config import DoorConfig, ModelConfig, MqttConfig, PolicyConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.door import DoorLoop
from toolkit.runtime.mqtt import MqttBridge, _parse_command
from toolkit.runtime.security import UnlockLimiter

pytest.importorskip("paho.mqtt.client")
P = "toolkit/door"
TOKEN = "tok-correct-horse-battery"


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()


def _camera(folder, values):
    folder.mkdir()
    for i, v in enumerate(values):
        Image.fromarray(frame(v)).save(folder / f"{i:03d}.png")
    return folder


def _transcript(messages) -> str:
    rows = []
    for topic, retained, payload in messages:
        if topic.endswith("/decision"):
            continue  # one per frame: the transcript keeps the state, availability, faults and commands
        payload = payload.replace(TOKEN, "<the token>")
        shown = payload if len(payload) <= 100 else payload[:97] + "..."
        rows.append(f"{topic:52s} retain={int(retained)}  {shown}")
    return "\n".join(rows)


def test_door_on_mqtt_discovery_state_unlock_and_last_will(export_dir, tmp_path, broker):
    cam = _camera(tmp_path / "cam", [40, 45, 50])  # dark frames: the tiny model never votes to open
    cmd = [sys.executable, "-m", "toolkit", "door", "run", "--model", str(export_dir), "--camera", str(cam),
           "--loop", "--fps", "20", "--open-seconds", "0.5", "--cooldown", "0", "--mqtt", f"127.0.0.1:{broker.port}",
           "--mqtt-client-id", "front-door", "--unlock-max-failures", "2", "--unlock-window", "1.5"]  # fmt: skip
    live = Recorder(broker.port)
    proc = subprocess.Popen(cmd, env={**os.environ, "TOOLKIT_DOOR_TOKEN": TOKEN}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        live.wait_for(f"{P}/availability", "online", timeout=30)
        live.wait_for(f"{P}/state", "locked")
        live.wait_for(f"{P}/decision")
        live.wait_for(f"{P}/seen", "OFF")  # published right after the first decision
        # A subscriber that comes later gets the retained messages: discovery, state, availability.
        late = Recorder(broker.port)
        assert late.wait_for(f"{P}/state", "locked")[1] is True
        assert late.wait_for(f"{P}/availability", "online")[1] is True
        lock_topic = "homeassistant/lock/front-door/door/config"
        seen_topic = "homeassistant/binary_sensor/front-door/seen/config"
        lock = json.loads(late.wait_for(lock_topic)[2])
        seen = json.loads(late.wait_for(seen_topic)[2])
        assert late.wait_for(lock_topic)[1] and late.wait_for(seen_topic)[1] and late.wait_for(f"{P}/seen", "OFF")[1]
        late.close()
        retained_view = list(late.messages)
        assert lock["unique_id"] == "front-door_lock" and seen["unique_id"] == "front-door_seen"
        assert lock["device"]["identifiers"] == ["front-door"] and seen["device"] == lock["device"]
        assert (lock["state_topic"], lock["command_topic"]) == (f"{P}/state", f"{P}/unlock/set")
        assert (lock["state_locked"], lock["state_unlocked"], lock["state_jammed"]) == ("locked", "open", "fault")
        assert lock["availability_topic"] == seen["availability_topic"] == f"{P}/availability"
        assert "code" in lock["command_template"] and seen["state_topic"] == f"{P}/seen"
        decision = json.loads(live.wait_for(f"{P}/decision")[2])
        assert decision["opened"] is False and (decision["k"], decision["n"]) == (3, 5)
        assert 0 <= decision["probability"] < 0.5 and "time" in decision and "votes" in decision

        # Refused: Home Assistant's bare payload (no token: counts nowhere), then wrong tokens up to the limit (2):
        # further wrong ones are refused as "too many"; the right token is checked first and opens at once.
        n = len(live.messages)
        live.publish(f"{P}/unlock/set", "UNLOCK")
        assert json.loads(live.wait_for(f"{P}/unlock", after=n)[2])["reason"] == "missing token"
        for expect in ("wrong token", "wrong token", "too many wrong tokens"):
            n = len(live.messages)
            live.publish(f"{P}/unlock/set", json.dumps({"action": "UNLOCK", "token": "guess"}))
            answer = json.loads(live.wait_for(f"{P}/unlock", after=n)[2])
            assert answer["result"] == "refused" and answer["reason"].startswith(expect), answer
        n = len(live.messages)
        live.publish(f"{P}/unlock/set", json.dumps({"action": "UNLOCK", "token": TOKEN}))
        assert json.loads(live.wait_for(f"{P}/unlock", after=n)[2])["result"] == "opened"
        live.wait_for(f"{P}/state", "open", after=n)
        live.wait_for(f"{P}/state", "locked", after=n)  # the open period (0.5 s) ends on its own
        assert not any(m[0] == f"{P}/state" and m[2] == "open" for m in live.messages[:n])  # opened only with it

        # Killed: no clean disconnect, so the broker sends the door's last will.
        n = len(live.messages)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert live.wait_for(f"{P}/availability", "offline", after=n)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
        live.close()
    assert TOKEN not in err and "guess" not in err  # refusals are logged without the token
    assert "mqtt unlock: refused (" in err  # the first refusal at once; the rest summarised a minute later
    print("\nMQTT transcript (mosquitto 127.0.0.1; decisions omitted). A subscriber on '#' from before the start:")
    print(_transcript(live.messages))
    print("A subscriber that connected once the door ran (retained messages first):")
    print(_transcript(retained_view))


def _door(export_dir, cam, **door):
    holder = ModelHolder(ModelConfig(export_dir))
    cfg = DoorConfig(camera=str(cam), policy=PolicyConfig(k=2, n=3, open_seconds=0.3, cooldown_seconds=0), **door)
    return DoorLoop(holder, open_source(cfg.camera, loop=cfg.loop), cfg, make_actuator("log", 17, True))


def test_password_file_and_a_clean_stop_says_offline(export_dir, tmp_path):
    broker = Broker(tmp_path, users={"door": "s3cret", "ha": "ha-pass"})
    try:
        (tmp_path / "mqtt-pass").write_text("s3cret\n")
        cam = _camera(tmp_path / "cam", [220, 220, 40])
        rec = Recorder(broker.port, user="ha", password="ha-pass")
        loop = _door(export_dir, cam, loop=True, fps=30)
        config = MqttConfig(mqtt=f"127.0.0.1:{broker.port}", mqtt_user="door",
                            mqtt_password_file=str(tmp_path / "mqtt-pass"), mqtt_discovery_prefix="")  # fmt: skip
        from toolkit.runtime.mqtt import read_password

        bridge = MqttBridge(config, None, UnlockLimiter(), read_password(config, {}))
        bridge.start(loop)
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,))
        thread.start()
        rec.wait_for(f"{P}/availability", "online")
        rec.wait_for(f"{P}/state", "open")  # bright frames: the vote opens the door
        rec.wait_for(f"{P}/seen", "ON")
        n = len(rec.messages)
        rec.publish(f"{P}/unlock/set", json.dumps({"token": "anything"}))
        assert "disabled" in json.loads(rec.wait_for(f"{P}/unlock", after=n)[2])["reason"]  # no token: never opens
        stop.set()
        thread.join(10)
        # Unlock answers go out at once: with Nagle's algorithm each waited ~40 ms for the broker's delayed ACK.
        assert bridge.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        bridge.close()
        loop.close()
        rec.wait_for(f"{P}/availability", "offline", after=n)  # said by the door itself: a clean disconnect has no will
        assert not any("/config" in m[0] for m in rec.messages)  # discovery off
        rec.close()
    finally:
        broker.stop()


class _StalledClient:
    """paho's publish as a stalled network would make it: it never returns."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def publish(self, *args, **kwargs):
        self.release.wait()


def test_the_door_keeps_deciding_when_the_broker_is_away_or_publishing_stalls(export_dir, tmp_path):
    from runtime_support import free_port

    cam = _camera(tmp_path / "cam", [220, 40, 220, 40])
    loop = _door(export_dir, cam, loop=True, max_frames=100)
    bridge = MqttBridge(MqttConfig(mqtt=f"127.0.0.1:{free_port()}"), TOKEN, UnlockLimiter())  # nobody there
    bridge.start(loop)
    started = time.monotonic()
    assert loop.run() == 100
    assert time.monotonic() - started < 10
    bridge.close(timeout=1)
    loop.close()

    loop = _door(export_dir, cam, loop=True, max_frames=100)
    bridge = MqttBridge(MqttConfig(mqtt=f"127.0.0.1:{free_port()}"), TOKEN, UnlockLimiter(), queue_size=16)
    stalled = _StalledClient()
    bridge.client.publish = stalled.publish  # the publishing thread blocks on its first message
    bridge.start(loop)
    assert loop.run() == 100  # 100 decisions > the queue: the overflow is dropped, the door does not wait
    assert bridge.dropped > 50
    stalled.release.set()
    bridge.close(timeout=1)
    loop.close()


def test_commands_and_settings_are_checked(export_dir, tmp_path, capsys):
    assert _parse_command(b'{"token": "t"}') == ("UNLOCK", "t")
    assert _parse_command(b'{"action": "lock", "token": "t"}') == ("LOCK", "t")
    assert _parse_command(b"UNLOCK") == ("UNLOCK", None)  # refused later: no token
    assert _parse_command(b'{"action": "explode", "token": "t"}') == (None, None)
    assert _parse_command(b'["t"]') == (None, None) and _parse_command(b"x" * 5000) == (None, None)
    assert MqttConfig(mqtt="broker.lan").address == ("broker.lan", 1883)
    assert MqttConfig(mqtt="broker.lan", mqtt_ca="ca.pem").address == ("broker.lan", 8883)
    assert MqttConfig(mqtt="10.0.0.2:1884").address == ("10.0.0.2", 1884)
    for bad in (dict(mqtt="host:99999"), dict(mqtt_prefix="door/#"), dict(mqtt_key="k.pem")):
        with pytest.raises(ToolkitError):
            MqttConfig(**bad)
    cam = _camera(tmp_path / "cam", [40])
    rc = main(["door", "run", "--model", str(export_dir), "--camera", str(cam), "--mqtt", "h:0", "--quiet"])
    assert rc != 0 and "error: --mqtt: expected HOST or HOST:PORT" in capsys.readouterr().err
    rc = main(["door", "run", "--model", str(export_dir), "--camera", str(cam), "--mqtt", "h", "--mqtt-user", "u",
               "--mqtt-password-file", str(tmp_path / "none"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "cannot read the MQTT password file" in err, err
