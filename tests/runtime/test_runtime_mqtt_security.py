"""MQTT unlock commands against a real mosquitto: a retained unlock never opens the door at a (re)start and is
named once with the command that clears it; wrong commands share one budget yet the right token always opens;
refusals are summarised in the log at WARNING level (what ``--quiet`` keeps), not one line each."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from mqtt_support import Broker, Recorder
from PIL import Image
from runtime_support import frame

from toolkit.runtime.actuator import make_actuator
from toolkit.runtime.camera import open_source
from toolkit.runtime.core.config import DoorConfig, ModelConfig, MqttConfig, PolicyConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.door import DoorLoop
from toolkit.runtime.mqtt import MqttBridge
from toolkit.runtime.security import UnlockLimiter, new_token

pytest.importorskip("paho.mqtt.client")
P = "toolkit/door"
TOKEN = new_token()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()


def _running_door(export_dir, tmp_path, port, limiter):
    cam = tmp_path / "cam"
    cam.mkdir(parents=True)
    for i, v in enumerate([40, 45, 50]):  # dark frames: the model never votes to open; only a command can
        Image.fromarray(frame(v)).save(cam / f"{i:03d}.png")
    cfg = DoorConfig(camera=str(cam), loop=True, fps=20,
                     policy=PolicyConfig(k=2, n=3, open_seconds=0.3, cooldown_seconds=0))  # fmt: skip
    opened = []
    loop = DoorLoop(ModelHolder(ModelConfig(export_dir)), open_source(cfg.camera, loop=True), cfg,
                    make_actuator("log", 17, True))  # fmt: skip
    loop.listeners.append(lambda event: opened.append(event) if event == "manual_open" else None)
    bridge = MqttBridge(MqttConfig(mqtt=f"127.0.0.1:{port}", mqtt_discovery_prefix=""), TOKEN, limiter)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    bridge.start(loop)
    thread.start()

    def close():
        stop.set()
        thread.join(10)
        bridge.close()
        loop.close()

    return bridge, opened, close


def test_a_retained_unlock_never_opens_at_start_and_is_named_once(export_dir, tmp_path, broker, caplog):
    rec = Recorder(broker.port)
    # What the issue did: `mosquitto_pub -r -t .../unlock/set -m '{"action":"UNLOCK","token":"<right>"}'`.
    rec.client.publish(f"{P}/unlock/set", json.dumps({"action": "UNLOCK", "token": TOKEN}), qos=1,
                       retain=True).wait_for_publish(5)  # fmt: skip
    caplog.set_level(logging.WARNING, "toolkit.runtime")
    for restart in range(2):  # each start gets the retained command again from the broker
        n = len(rec.messages)
        bridge, opened, close = _running_door(export_dir, tmp_path / f"run{restart}", broker.port, UnlockLimiter())
        answer = json.loads(rec.wait_for(f"{P}/unlock", after=n)[2])
        assert answer["result"] == "refused" and "retained" in answer["reason"]
        # The positive control: the same command, not retained, opens this very door.
        n = len(rec.messages)
        rec.publish(f"{P}/unlock/set", json.dumps({"action": "UNLOCK", "token": TOKEN}))
        assert json.loads(rec.wait_for(f"{P}/unlock", after=n)[2])["result"] == "opened"
        close()
        assert opened == ["manual_open"]  # once: the non-retained command, never the retained one
    warnings = [r.getMessage() for r in caplog.records if "RETAINED" in r.getMessage()]
    assert len(warnings) == 2  # once per start
    assert f"mosquitto_pub -h 127.0.0.1 -p {broker.port} -r -n -t '{P}/unlock/set'" in warnings[0]
    assert TOKEN not in caplog.text
    rec.close()


def test_wrong_commands_share_a_budget_the_right_token_opens_and_refusals_are_summarised(
        export_dir, tmp_path, broker, caplog):  # fmt: skip
    caplog.set_level(logging.WARNING, "toolkit.runtime")
    rec = Recorder(broker.port)
    bridge, opened, close = _running_door(export_dir, tmp_path, broker.port, UnlockLimiter(max_failures=5))
    try:
        rec.wait_for(f"{P}/availability", "online")
        for _ in range(40):  # the five wrong commands locked out Home Assistant for a minute
            rec.client.publish(f"{P}/unlock/set", json.dumps({"action": "UNLOCK", "token": "guess"}), qos=1)
        n = len(rec.messages)
        rec.publish(f"{P}/unlock/set", json.dumps({"action": "UNLOCK", "token": TOKEN}))
        assert json.loads(rec.wait_for(f"{P}/unlock", lambda p: "opened" in p, after=n)[2])["result"] == "opened"
        reasons = [json.loads(m[2])["reason"] for m in rec.messages if m[0] == f"{P}/unlock" and "refused" in m[2]]
        assert reasons.count("wrong token") == 5 and len(reasons) == 40
        assert all(r.startswith("too many wrong tokens") for r in reasons if r != "wrong token")
        bridge.refusals.flush()  # what the minute's timer does
        lines = [r for r in caplog.records if r.getMessage().startswith("mqtt unlock:")]
        assert len(lines) == 2 and all(r.levelno == logging.WARNING for r in lines), [r.getMessage() for r in lines]
        assert "39 refused in the last 60 s" in lines[1].getMessage()
        assert "guess" not in caplog.text and TOKEN not in caplog.text
    finally:
        close()
        rec.close()
    assert opened == ["manual_open"]
