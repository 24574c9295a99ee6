"""The door on MQTT, for Home Assistant: its state, decisions and faults out; an unlock command in, with the token.

Topics under ``--mqtt-prefix`` (``P``, default ``toolkit/door``); docs/door-ops.md lists the payloads:

- ``P/availability``  ``online`` / ``offline`` (retained; ``offline`` is the last will, sent by the broker
  when the door's connection dies);
- ``P/state``         ``locked`` / ``open`` / ``fault`` (retained; ``locked`` at start);
- ``P/seen``          ``ON`` / ``OFF``: the last judged frame reached the threshold (retained);
- ``P/decision``      one JSON object per decision: the event-log record plus ``k`` and ``n``;
- ``P/fault``         ``{"time", "reason"}`` when the door locks on a new kind of fault;
- ``P/model``         ``{"model", "version", "threshold"}``: which head decides (retained; ``version`` None = the
  export's own head, else an adapted version of ``toolkit door adapt``);
- ``P/adapt``         ``{"time", "result": "adapted" | "refused" | "failed", "version", "message"}`` after an
  adapt started on the page;
- ``P/unlock/set``    the command: ``{"token": "...", "action": "UNLOCK"}``; ``P/unlock`` answers
  ``{"time", "result": "opened" | "refused", "reason"}``;
- ``<discovery prefix>/lock/<client id>/door/config`` and ``.../binary_sensor/<client id>/seen/config``:
  Home Assistant discovery (retained).

The decision loop never waits for the network: it only puts messages on a bounded queue that a thread
of this module hands to paho (whose own thread connects and reconnects); when the queue is full, messages
are dropped and counted. An unlock command is checked like ``POST /door/open``: constant-time compare, the
right token always opens, and wrong ones share one budget of the failed-attempt limiter (MQTT carries no
publisher identity: all MQTT commands are one client); the token is never logged or echoed. A *retained*
unlock command (``mosquitto_pub -r``) is ignored: the broker would hand it to the door on every restart, which
would open with nobody asking. Who may read the command topic, and so the token, is the broker's ACLs' business.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import socket
import sys
import threading
import time
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.runtime.actuator import RelayError
from toolkit.runtime.core.config import MqttConfig
from toolkit.runtime.guard import RefusalLog
from toolkit.runtime.mqtt_discovery import discovery
from toolkit.runtime.security import UnlockLimiter, retry_seconds, tokens_match

log = logging.getLogger("toolkit.runtime")

STARTING = "no frame yet"  # DoorPolicy's fault before the first frame: the door is locked, not faulty
MAX_COMMAND_BYTES = 4096  # a token and an action fit in far less; anything bigger is refused unparsed
CLIENT = "mqtt"  # the limiter's client name: MQTT gives no address, so all MQTT commands share one budget
QUEUE_SIZE = 512  # messages waiting for paho: ~17 s of decisions at 30 fps before the oldest news is dropped


def door_state(door) -> tuple[str, str | None]:
    """("open" | "locked" | "fault", the fault's reason) of a :class:`~toolkit.runtime.door.DoorLoop`."""
    if door.actuator.unlocked:
        return "open", None
    reason = door.actuator.fault or door.policy.fault
    if reason is None or (reason == STARTING and door.frames == 0):
        return "locked", None
    return "fault", reason


def read_password(config: MqttConfig, environ: dict) -> str | None:
    """The broker password from ``--mqtt-password-file`` or its env var; None when neither is set.

    Raises:
        ToolkitError: the password file is unreadable.
    """
    if config.mqtt_password_file:
        try:
            return Path(config.mqtt_password_file).read_text().strip() or None
        except OSError as exc:
            raise ToolkitError(
                f"{config.mqtt_password_file}: cannot read the MQTT password file ({exc.strerror})"
            ) from exc
    return environ.get(config.mqtt_password_env, "").strip() or None


class MqttBridge:
    """Publishes a door to an MQTT broker and takes token-checked unlock commands from it.

    Built before the camera and the relay are claimed (a missing package or TLS file fails first); the door
    comes with :meth:`start`.

    Args:
        config: broker, credentials, TLS and topics.
        token: the manual-unlock token; None refuses every unlock command.
        limiter: failed-unlock limiter, shared with ``POST /door/open`` when the API runs too.
        password: the broker password (see :func:`read_password`).
        queue_size: messages that may wait for the network; beyond it new ones are dropped.
        notice: why manual unlock is disabled although a token is configured (said in each refusal), or None.

    Raises:
        ToolkitError: paho-mqtt is not installed, or a TLS file is unreadable.
    """

    def __init__(self, config: MqttConfig, token: str | None, limiter: UnlockLimiter,
                 password: str | None = None, queue_size: int = QUEUE_SIZE,
                 notice: str | None = None) -> None:  # fmt: skip
        from toolkit.runtime.extras import door_extra

        with door_extra("--mqtt"):
            import paho.mqtt.client as paho
        self.config, self.token, self.limiter, self.notice = config, token, limiter, notice
        self.refusals = RefusalLog("mqtt unlock")
        self._retained_warned = False
        self.door = None
        p = config.mqtt_prefix
        self.topics = {name: f"{p}/{name}" for name in ("availability", "state", "seen", "decision", "fault", "unlock",
                                                       "model", "adapt")}
        self.topics["command"] = f"{p}/unlock/set"
        self._state: str | None = None  # last published: published again only when it changes
        self._fault_kind: str | None = None
        self._seen: bool | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(queue_size)
        self.dropped = 0
        self._connected_once = False
        self._outage_logged = False

        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=config.mqtt_client_id)
        if config.mqtt_user:
            client.username_pw_set(config.mqtt_user, password)
        if config.tls:
            try:  # certificate and host name checked; there is deliberately no "insecure" switch
                client.tls_set(ca_certs=config.mqtt_ca, certfile=config.mqtt_cert, keyfile=config.mqtt_key)
            except (OSError, ValueError) as exc:
                raise ToolkitError(f"--mqtt-ca/--mqtt-cert/--mqtt-key: cannot load TLS files ({exc})") from exc
        client.will_set(self.topics["availability"], "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        client.max_queued_messages_set(QUEUE_SIZE)  # QoS 1 messages paho keeps while the broker is away
        client.on_connect, client.on_disconnect, client.on_message = self._connected, self._disconnected, self._command
        client.on_connect_fail = self._connect_failed
        client.on_socket_open = _no_nagle
        self.client = client
        self._worker = threading.Thread(target=self._publish_queued, name="mqtt-publish", daemon=True)

    # --- life cycle -------------------------------------------------------------------------------
    def start(self, door) -> None:
        """Connect in the background (the door does not wait for the broker) and follow ``door``, a running
        :class:`~toolkit.runtime.door.DoorLoop`."""
        host, port = self.config.address
        self.door = door
        door.listeners.append(self._door_event)
        door.watchers.append(self._decision)
        holder = getattr(door, "holder", None)
        if holder is not None:
            holder.listeners.append(self._model_event)
        self._worker.start()
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        log.info("mqtt: publishing to %s:%d, topics %s/...%s", host, port, self.config.mqtt_prefix,
                 "" if self.token else "; no unlock token configured: unlock commands are refused")  # fmt: skip

    def close(self, timeout: float = 3.0) -> None:
        """Send what is queued and ``offline`` (a clean disconnect sends no last will), then disconnect."""
        if self.door is None:  # never started: never connected
            return
        self._refresh()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:  # the publishing thread is stuck in the network: leave it (a daemon) behind
            pass
        self._worker.join(timeout)
        if self.client.is_connected():
            info = self.client.publish(self.topics["availability"], "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):  # the connection went away meanwhile: the will covers it
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.refusals.close()

    # --- door → broker (called from the door's threads: only queue work here) -----------------------
    def _door_event(self, event: str) -> None:
        self._refresh()

    def _model_event(self, event: str) -> None:
        """A holder listener: a reload (a version chosen, rolled back) restates the model; an adapt says how it went."""
        if event.startswith("adapt"):
            result = getattr(self.door.holder, "adapt_result", None) or {}
            self._put(self.topics["adapt"], json.dumps({"time": round(time.time(), 3), **result}), retain=False)
        if event in ("reload", "adapt"):
            self._publish_model()

    def _publish_model(self) -> None:
        p = self.door.holder.predictor
        threshold = self.door._threshold(p) if hasattr(self.door, "_threshold") else self.door.policy.threshold
        self._put(self.topics["model"], json.dumps({"model": p.name, "version": p.version["id"] if p.version else None,
                                                    "threshold": threshold}))  # the new model's, before its frame

    def _decision(self, event: dict, frame=None, box=None) -> None:
        """A door watcher: publishes each logged event (the frame and face box are the page's, not ours)."""
        k, n = self.door.config.policy.k, self.door.config.policy.n
        self._put(self.topics["decision"], json.dumps({**event, "k": k, "n": n}), qos=0, retain=False)
        p = event["probability"]
        seen = p is not None and p >= self.door.policy.threshold
        with self._lock:
            changed, self._seen = seen != self._seen, seen
        if changed:
            self._put(self.topics["seen"], "ON" if seen else "OFF")
        self._refresh()

    def _refresh(self, force: bool = False) -> None:
        """Publish the door's state when it changed, and a fault when it is a new kind of fault."""
        state, reason = door_state(self.door)
        kind = re.sub(r"[0-9.]+", "#", reason) if reason else None  # "no frame for 2.1 s" is one kind
        with self._lock:
            changed = force or state != self._state
            new_fault = kind is not None and kind != self._fault_kind
            self._state, self._fault_kind = state, kind
        if changed:
            self._put(self.topics["state"], state)
        if new_fault:
            self._put(self.topics["fault"], json.dumps({"time": round(time.time(), 3), "reason": reason}),
                      retain=False)  # fmt: skip

    def _put(self, topic: str, payload: str, qos: int = 1, retain: bool = True) -> None:
        try:
            self._queue.put_nowait((topic, payload, qos, retain))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("mqtt: %d messages dropped (the broker is slow or away); the door keeps deciding",
                            self.dropped)  # fmt: skip

    def _publish_queued(self) -> None:
        while (item := self._queue.get()) is not None:
            topic, payload, qos, retain = item
            self.client.publish(topic, payload, qos=qos, retain=retain)  # not connected: QoS 0 is dropped

    # --- paho's thread ----------------------------------------------------------------------------
    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if not self._outage_logged:
                self._outage_logged = True
                log.error("mqtt: the broker refused the connection: %s; retrying", reason_code)
            return
        self._outage_logged = False
        log.info("mqtt: connected to %s:%d", *self.config.address)
        client.subscribe(self.topics["command"], qos=1)
        client.publish(self.topics["availability"], "online", qos=1, retain=True)
        for topic, config in discovery(self.config, self.topics, self.door).items():
            client.publish(topic, json.dumps(config), qos=1, retain=True)
        with self._lock:
            self._seen = None  # re-sent on the next decision
        if getattr(self.door, "holder", None) is not None:
            self._publish_model()
        self._refresh(force=True)  # retained state again: the broker may have restarted without persistence

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure and not self._outage_logged:
            self._outage_logged = True
            log.warning("mqtt: disconnected (%s); the door keeps deciding; reconnecting", reason_code)

    def _connect_failed(self, client, userdata) -> None:
        if self._outage_logged:
            return
        self._outage_logged = True
        # paho calls this from inside its ``except OSError``: the exception says why (it does not pass it on)
        exc = sys.exc_info()[1]
        log.warning("mqtt: cannot connect to %s:%d: %s; the door keeps deciding; retrying", *self.config.address,
                    connect_error(exc))  # fmt: skip

    def _command(self, client, userdata, message) -> None:
        """An unlock command. The payload is never logged: it carries the token."""
        try:
            if message.retain:
                return self._retained()
            self._unlock(message.payload)
        except Exception as exc:  # an exception would end paho's thread, and with it MQTT, for good
            log.error("mqtt: unlock command failed: %s: %s", type(exc).__name__, exc)
            self._answer("refused", "internal error; the door stays locked")

    def _retained(self) -> None:
        """A retained command: the broker kept it and replays it to every new subscriber, this door after each
        restart. Never acted on; said once, with the command that removes it from the broker."""
        self.refusals.note("retained command ignored")
        if not self._retained_warned:
            self._retained_warned = True
            host, port = self.config.address
            log.warning("mqtt: ignoring a RETAINED unlock command on %s: the broker would replay it on every "
                        "restart; clear it with: mosquitto_pub -h %s -p %d -r -n -t '%s' (and send unlock "
                        "commands without -r / retain)", self.topics["command"], host, port,
                        self.topics["command"])  # fmt: skip
        self._answer("refused", "retained commands are ignored; publish unlock commands without retain", log_it=False)

    def _unlock(self, payload: bytes) -> None:
        action, given = _parse_command(payload)
        if action == "LOCK":  # the door locks itself at the end of its open period; just restate it
            self._refresh(force=True)
            return
        if action is None:
            return self._answer("refused", 'not a command; send {"token": "...", "action": "UNLOCK"}')
        if self.token is None:
            return self._answer("refused", self.notice or "manual unlock is disabled: no token configured on the door")
        if not given:  # nothing to check: refused, and counts against nobody (as on HTTP)
            return self._answer("refused", "missing token")
        if not tokens_match(given, self.token):  # the right token is checked first and always opens
            wait = self.limiter.retry_after(CLIENT)
            if wait is not None:
                return self._answer("refused", f"too many wrong tokens; retry in {retry_seconds(wait)} s")
            self.limiter.failed(CLIENT)
            return self._answer("refused", "wrong token")
        self.limiter.succeeded(CLIENT)
        try:
            self.door.manual_open()
        except RelayError as exc:
            return self._answer("refused", f"{exc}; the door is locked")
        self._answer("opened", "manual unlock")

    def _answer(self, result: str, reason: str, log_it: bool = True) -> None:
        if result != "opened" and log_it:
            self.refusals.note(re.sub(r"[0-9]+ s$", "# s", reason))  # summarised: 2,000 guesses are not 2,000 lines
        payload = {"time": round(time.time(), 3), "result": result, "reason": reason}
        self._put(self.topics["unlock"], json.dumps(payload), retain=False)


def connect_error(exc: BaseException | None) -> str:
    """Why a connection failed, in words a user can act on (a TLS failure names the option to check)."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the broker's TLS certificate was refused ({exc.verify_message}): check that --mqtt-ca is the CA "
                "that signed it and that the host name given to --mqtt is in it")  # fmt: skip
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc}): is that port a TLS listener, and --mqtt-cert/--mqtt-key right?"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return "unreachable"


def _no_nagle(client, userdata, sock) -> None:
    """Send each message at once: with Nagle's algorithm an unlock answer written right after the command's
    acknowledgement waits ~40 ms for the broker's delayed ACK (measured: 43.6 ms p50 over MQTT vs 5.3 ms over
    HTTP, the same door)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # a websocket wrapper or a socket that is not TCP: keep its defaults
        pass


def _parse_command(payload: bytes) -> tuple[str | None, str | None]:
    """(action, token) of a command: a JSON object ``{"token": str, "action": "UNLOCK" | "LOCK"}`` (action
    defaults to UNLOCK); (None, None) when it is not one. A bare ``UNLOCK`` has no token and is refused later."""
    if len(payload) > MAX_COMMAND_BYTES:
        return None, None
    text = payload.decode("utf-8", "replace").strip()
    if text.upper() in ("UNLOCK", "OPEN", "LOCK"):
        return text.upper().replace("OPEN", "UNLOCK"), None
    try:
        command = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(command, dict):
        return None, None
    action = str(command.get("action") or "UNLOCK").upper().replace("OPEN", "UNLOCK")
    token = command.get("token")
    if action not in ("UNLOCK", "LOCK"):
        return None, None
    return action, token if isinstance(token, str) else None
