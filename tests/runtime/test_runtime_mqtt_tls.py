"""The door on MQTT over TLS: a throwaway CA and server certificate (openssl), mosquitto with a TLS listener on
127.0.0.1; the door connects with ``--mqtt-ca`` and publishes, and with the wrong CA it says so in one warning
and keeps deciding."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from mqtt_support import Broker, Recorder, make_ca, server_certificate
from PIL import Image
from runtime_support import frame

from toolkit.errors import ToolkitError
from toolkit.runtime.actuator import make_actuator
from toolkit.runtime.camera import open_source
from toolkit.runtime.core.config import DoorConfig, ModelConfig, MqttConfig, PolicyConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.door import DoorLoop
from toolkit.runtime.mqtt import MqttBridge
from toolkit.runtime.security import UnlockLimiter

pytest.importorskip("paho.mqtt.client")
P = "toolkit/door"


def _door(export_dir, tmp_path, **door) -> DoorLoop:
    cam = tmp_path / "cam"
    cam.mkdir(parents=True)
    for i, v in enumerate([220, 220, 40]):
        Image.fromarray(frame(v)).save(cam / f"{i:03d}.png")
    holder = ModelHolder(ModelConfig(export_dir))
    cfg = DoorConfig(camera=str(cam), loop=True, policy=PolicyConfig(k=2, n=3, open_seconds=0.3, cooldown_seconds=0),
                     **door)  # fmt: skip
    return DoorLoop(holder, open_source(cfg.camera, loop=True), cfg, make_actuator("log", 17, True))


def test_door_publishes_over_tls_and_a_wrong_ca_is_one_warning(export_dir, tmp_path, caplog):
    ca = make_ca(tmp_path, "door-test-ca")
    broker = Broker(tmp_path, tls=(ca[0], *server_certificate(tmp_path, ca)))
    rec = Recorder(broker.port)  # the plain listener: only the door's side is under test
    try:
        loop = _door(export_dir, tmp_path, fps=30)
        bridge = MqttBridge(MqttConfig(mqtt=f"127.0.0.1:{broker.tls_port}", mqtt_ca=str(ca[0])), None, UnlockLimiter())
        bridge.start(loop)
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,))
        thread.start()
        try:
            rec.wait_for(f"{P}/availability", "online")  # connected through the TLS listener, CA and host checked
            rec.wait_for(f"{P}/state", "open")
            rec.wait_for(f"{P}/decision")
        finally:
            stop.set()
            thread.join(10)
            bridge.close()
            loop.close()

        caplog.set_level(logging.WARNING, logger="toolkit.runtime")
        wrong, _ = make_ca(tmp_path, "some-other-ca")
        loop = _door(export_dir, tmp_path / "2", max_frames=60)
        bridge = MqttBridge(MqttConfig(mqtt=f"127.0.0.1:{broker.tls_port}", mqtt_ca=str(wrong)), None, UnlockLimiter())
        bridge.start(loop)
        assert loop.run() == 60  # the door never waits for the broker
        deadline = time.monotonic() + 5
        while not [r for r in caplog.records if "mqtt" in r.getMessage()] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.2)  # paho retries after 1 s: still one warning
        bridge.close(timeout=1)
        loop.close()
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("mqtt: cannot connect")]
        assert len(lines) == 1 and "\n" not in lines[0], lines
        assert "certificate was refused" in lines[0] and "--mqtt-ca" in lines[0] and "keeps deciding" in lines[0]
        print("\nwrong CA, logged once:", lines[0])
    finally:
        rec.close()
        broker.stop()


def test_an_unreadable_ca_file_is_a_user_error(tmp_path):
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for path in (tmp_path / "missing.pem", tmp_path / "junk.pem"):
        with pytest.raises(ToolkitError, match="cannot load TLS files"):
            MqttBridge(MqttConfig(mqtt="127.0.0.1", mqtt_ca=str(path)), None, UnlockLimiter())
