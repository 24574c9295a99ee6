"""Home Assistant's MQTT discovery for the door (:class:`toolkit.runtime.mqtt.MqttBridge` publishes it, retained, on
each connection): the door appears as a lock whose unlock command carries the token as its code, and a binary
sensor for "the face (or sign) the door opens for is seen"."""

from __future__ import annotations

import re

from toolkit import __version__
from toolkit.runtime.core.config import MqttConfig


def discovery(config: MqttConfig, topics: dict[str, str], door) -> dict[str, dict]:
    """{config topic: config} for Home Assistant's MQTT discovery: a lock and a binary sensor.

    Args:
        config: the door's MQTT settings (discovery prefix, client id).
        topics: the bridge's topics by name (availability, state, command, seen).
        door: the running door loop (its model's name and positive label, its ``--open-on``).
    """
    prefix, cid = config.mqtt_discovery_prefix, config.mqtt_client_id
    if not prefix:
        return {}
    predictor = door.holder.predictor
    node = re.sub(r"[^A-Za-z0-9_-]", "_", cid)  # discovery topics allow only these in the node id
    device = {"identifiers": [cid], "name": f"Door {cid}", "manufacturer": "toolkit",
              "model": predictor.name, "sw_version": __version__}  # fmt: skip
    common = {"device": device, "availability_topic": topics["availability"], "qos": 1,
              "origin": {"name": "toolkit", "sw_version": __version__}}  # fmt: skip
    lock = {
        **common,
        "name": "Lock",
        "unique_id": f"{node}_lock",
        "state_topic": topics["state"],
        "command_topic": topics["command"],
        "state_locked": "locked",
        "state_unlocked": "open",
        "state_jammed": "fault",  # locked by a fault: the reason is on P/fault
        "payload_lock": "LOCK",
        "payload_unlock": "UNLOCK",
        # Home Assistant asks for a code and puts it in the command: the code is the door's token.
        "code_format": "^.+$",
        "command_template": "{{ {'action': value, 'token': code} | to_json }}",
    }
    seen = {
        **common,
        "name": f"{door.config.policy.open_on or predictor.positive_label} seen",  # --open-on: that sign
        "unique_id": f"{node}_seen",
        "state_topic": topics["seen"],
        "payload_on": "ON",
        "payload_off": "OFF",
    }
    return {f"{prefix}/lock/{node}/door/config": lock, f"{prefix}/binary_sensor/{node}/seen/config": seen}
