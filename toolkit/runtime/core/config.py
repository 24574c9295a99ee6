"""Configs for the door runtime: frozen dataclasses, one field per ``toolkit door`` flag (TF-free).

Each user setting is declared once with :func:`toolkit.settings.setting`; ``toolkit door serve``/``run``/
``collect`` derive their options from these fields (``toolkit.cli.door``).

Defaults are the safe choice: bind loopback, lock the door, require several agreeing frames.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.images import DEFAULT_MAX_PIXELS
from toolkit.settings import SettingError, check, setting

# The env var that holds the manual-unlock bearer token; no token configured means no manual unlock.
DEFAULT_TOKEN_ENV = "TOOLKIT_DOOR_TOKEN"
RELAYS = ("log", "gpio")
DETECTORS = ("none", "haar", "blazeface")  # 'none' crops nothing (the whole frame goes to the model)


@dataclass(frozen=True)
class ModelConfig:
    folder: Path = setting(help="Export folder with manifest.json (written by 'toolkit export' or 'toolkit "
                           "face-model'; the committed door model: exported/happy-face).", flag="--model")
    file: str | None = setting(None, "ONNX file in the folder (default: the manifest's 'serve' file).")
    # 1 keeps latency steady on a 4-core Pi sharing a camera
    threads: int = setting(1, "Threads per model (onnxruntime intra-op; LiteRT interpreter).", low=1)
    # Refuse larger photos before decoding (decompression bombs); 25 MP = ~75 MB of RGB per request.
    max_pixels: int = setting(min(DEFAULT_MAX_PIXELS, 25_000_000), "Largest decoded image accepted.", low=1)
    # >0: poll the folder and hot-reload on change (SIGHUP always reloads)
    watch_seconds: float = setting(0.0, "Poll the model folder every S seconds and hot-reload it.", low=0,
                                   flag="--watch")
    # None: no versions (``toolkit door run`` defaults it to $STATE_DIRECTORY under systemd)
    state: Path | None = setting(None, "The door's state folder, where 'toolkit door adapt' keeps head versions; the "
                                 "chosen one serves. Default: $STATE_DIRECTORY when systemd sets it.")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class ServeConfig:
    # loopback unless told otherwise: the API can unlock a door
    host: str = setting("127.0.0.1", "Address to bind; 0.0.0.0 exposes the API to the network.")
    port: int = setting(8000, "TCP port of the API.", low=1, high=65535)
    # a 12 MP JPEG is ~5 MB; anything bigger is refused unread (413)
    max_body_bytes: int = setting(8 << 20, "Largest request body accepted (413 above).", low=1)
    # v2 infer batch ceiling: bounds memory per request
    max_batch: int = setting(64, "Largest batch a v2 infer request may send.", low=1)
    # where the manual-unlock token comes from... or a file (wins over the env var; keep it mode 600)
    token_env: str = setting(DEFAULT_TOKEN_ENV, "Env var holding the token (if no file).")
    token_file: Path | None = setting(None, "File holding the manual-unlock bearer token.")
    log_level: str = "info"  # uvicorn's; 'warning' keeps a Pi's SD card quiet (``door --quiet`` sets it)
    # Request headers, then the body, must each arrive within this: a slow client (slowloris) is cut
    # off instead of holding a connection forever. 30 s moves an 8 MB body at ~2 Mbit/s.
    request_timeout_seconds: float = setting(30.0, "Seconds for a request's headers, then its body (slow clients "
                                             "cut off).", low=0.1, flag="--request-timeout")
    # wrong tokens per client for /door/open within the window; then 429 until the window has passed
    unlock_max_failures: int = setting(5, "Wrong /door/open tokens per client per window before 429.", low=1)
    unlock_window_seconds: float = setting(60.0, "Window (s) for --unlock-max-failures.", low=0.1,
                                           flag="--unlock-window")
    # Behind a reverse proxy every request comes from the proxy: name it, and the client that wrong tokens are
    # counted against is the right-most X-Forwarded-For entry that proxy added (never one a client sent).
    trusted_proxy: tuple = setting((), "Reverse proxy address(es) or network(s) in front of the API (comma list): "
                                   "their X-Forwarded-For names the client.")
    # DNS rebinding: a page under the attacker's name must not read the door. () = the listen address,
    # localhost and this machine's names (IP literals always pass); behind a proxy add the site's name.
    allowed_hosts: tuple = setting((), "Host names the API answers to (comma list; * = any). Default: the listen "
                                   "address, localhost and this machine's names.")
    # requests inferring at once; the rest queue
    inference_threads: int = setting(0, "Requests running the model at once; others queue (0 = cores, cores - 1 "
                                     "beside a door).", low=0)
    # the door goes first
    inference_nice: int = setting(10, "Beside a door, API inference threads run this much nicer (Linux).", low=0,
                                  high=19)

    def __post_init__(self) -> None:
        check(self)
        for entry in self.trusted_proxy:
            try:
                ipaddress.ip_network(str(entry).strip().strip("[]"), strict=False)
            except ValueError:
                raise SettingError("trusted_proxy", f"{entry!r} is not an IP address or network (e.g. 127.0.0.1 or "
                                   "10.0.0.0/8)") from None


@dataclass(frozen=True)
class PolicyConfig:
    # k of the last n frames: one lucky frame never opens the door
    k: int = setting(3, "Frames at or above the threshold needed to open...", low=1, flag="--votes",
                     aliases=("--k",))
    n: int = setting(5, "...among the last WINDOW frames.", low=1, flag="--window", aliases=("--n",))
    # None = the manifest's per-file threshold (chosen at export)
    threshold: float | None = setting(None, "Override the manifest's threshold.", low=0, high=1)
    open_seconds: float = setting(3.0, "How long the door stays unlocked.", low=0.1)
    # so one smile opens the door once
    cooldown_seconds: float = setting(5.0, "Locked time after each opening.", low=0, flag="--cooldown")
    # no frame for this long = in doubt = locked and not ready
    stale_seconds: float = setting(2.0, "No frame for this long locks the door.", low=0.1, flag="--stale")
    # A label to open on (e.g. the hand sign "5"): a frame votes when P(label) >= threshold (default 0.5);
    # lets a multi-class export drive the door. No hand / no face = no vote. None = the binary model's yes.
    open_on: str | None = setting(None, "Open on this label of a multi-class export (e.g. the hand sign 5): a frame "
                                  "votes when P(label) >= --threshold (default 0.5); no hand, no vote.")

    def __post_init__(self) -> None:
        check(self)
        if self.k > self.n:
            raise SettingError("k", f"must be at most --window: k-of-n needs 1 <= k <= n, got k={self.k} n={self.n}")


@dataclass(frozen=True)
class LogRotation:
    """How big the event log may grow: it is written at the frame rate, on an SD card."""

    # ~100 bytes a line: 10 MB holds a day at 1 fps, an hour at 30 fps; 0 = never rotate
    event_log_max_bytes: int = setting(10 << 20, "Rotate the event log at this size (0 = never).", low=0)
    event_log_backups: int = setting(3, "Rotated event logs kept (events.jsonl.1 ...); older are deleted.", low=0)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class MqttConfig:
    """MQTT and Home Assistant: the door's state, decisions and faults; an unlock command that needs the token."""

    mqtt: str | None = setting(None, "MQTT broker HOST[:PORT] (1883; 8883 with TLS): publish the door's state, "
                                     "decisions and faults, with Home Assistant discovery.")
    mqtt_user: str | None = setting(None, "MQTT user name.")
    # Not a --mqtt-password flag: a command line is readable by every user of the machine (ps, /proc).
    mqtt_password_file: str | None = setting(None, "File holding the MQTT password (keep it mode 600).")
    mqtt_password_env: str = setting("TOOLKIT_MQTT_PASSWORD", "Env var holding the MQTT password (if no file).")
    mqtt_tls: bool = setting(False, "Connect with TLS, checking the broker's certificate and host name.")
    mqtt_ca: str | None = setting(None, "CA certificate file for TLS (default: the system's); implies --mqtt-tls.")
    mqtt_cert: str | None = setting(None, "Client certificate file for TLS; implies --mqtt-tls.")
    mqtt_key: str | None = setting(None, "Client private key file for --mqtt-cert.")
    mqtt_prefix: str = setting("toolkit/door", "Topic prefix: PREFIX/state, /decision, /fault, /availability...")
    mqtt_discovery_prefix: str = setting("homeassistant", "Home Assistant discovery prefix ('' = no discovery).")
    # Also the Home Assistant device id: give each door its own (e.g. front-door).
    mqtt_client_id: str = setting("toolkit-door", "MQTT client id, unique per door.")

    def __post_init__(self) -> None:
        check(self)
        if self.mqtt is not None:
            host, sep, port = self.mqtt.rpartition(":")
            if not self.mqtt or (sep and (not host or not (port.isdigit() and 0 < int(port) < 65536))):
                raise SettingError("mqtt", f"expected HOST or HOST:PORT, got {self.mqtt!r}")
        if self.mqtt_key and not self.mqtt_cert:
            raise SettingError("mqtt_key", "needs --mqtt-cert (the certificate that goes with the key)")
        for name in ("mqtt_prefix", "mqtt_discovery_prefix", "mqtt_client_id"):
            value = getattr(self, name)
            if any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
                raise SettingError(name, f"{value!r} is not a topic name (no + # or NUL, no leading/trailing /)")
        if not self.mqtt_prefix or not self.mqtt_client_id:
            raise SettingError("mqtt_prefix" if not self.mqtt_prefix else "mqtt_client_id", "must not be empty")

    @property
    def address(self) -> tuple[str, int]:
        """(host, port); the port defaults to 1883, or 8883 with TLS."""
        assert self.mqtt is not None
        host, sep, port = self.mqtt.rpartition(":")
        if not sep:
            return self.mqtt, 8883 if self.tls else 1883
        return host.strip("[]"), int(port)

    @property
    def tls(self) -> bool:
        return self.mqtt_tls or bool(self.mqtt_ca or self.mqtt_cert)


@dataclass(frozen=True)
class DoorConfig:
    camera: str = setting(help="Device index, RTSP/HTTP URL, video, 'picamera2' or a folder.")
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # its own options (``door run`` builds it)
    relay: str = setting("log", "'log' (dry run) or 'gpio'.", choices=RELAYS)
    relay_pin: int = setting(17, "BCM pin of the relay driver.")
    active_high: bool = True  # False for relay boards that energise on a low pin (``door run --active-low``)
    # None = the export's detector, if any
    face: str | None = setting(None, "Crop the largest face first (no face, no vote). Default: the export's "
                               "detector, if any.", choices=DETECTORS, flag="--detector", aliases=("--face",))
    # True: MediaPipe's video mode (the palm / face detector runs only when no hand / face is followed;
    # toolkit.inference.handtrack, toolkit.inference.facetrack)
    track: bool = setting(True, "Follow a hand or face from frame to frame (hand-sign and face-landmark exports); "
                          "--no-track judges each frame alone, like a photo.", flag="--track/--no-track")
    # >0 caps the frame rate (saves CPU)
    fps: float = setting(0.0, "Cap the frame rate (0 = as fast as frames come).", low=0)
    # JSON lines: time, probability, decision, latency
    event_log: Path | None = setting(None, "Append one JSON line per frame here.")
    event_log_rotation: LogRotation = field(default_factory=LogRotation)  # its own options
    # None = off (``toolkit door run`` defaults it to $STATE_DIRECTORY/snapshots under systemd).
    snapshots: Path | None = setting(None, "Keep the frames that opened the door, and a sample of the others, here "
                                     "for review on the page. Default: $STATE_DIRECTORY/snapshots when systemd "
                                     "sets it, else off.")
    # ~3,000 VGA frames, a small share of an SD card
    snapshot_cap_mb: float = setting(200.0, "Drop the oldest snapshots above this many MB.", low=1)
    snapshot_every: float = setting(10.0, "Seconds between kept frames that did not open the door (0: openings "
                                    "only).", low=0)
    labelled: Path | None = setting(None, "Image folder (a subfolder per label) that snapshots relabelled on the "
                                    "page go to, for 'toolkit finetune --data'. Default: SNAPSHOTS/labelled.")
    # camera loss: first retry delay, doubling up to the max
    reconnect_min_seconds: float = setting(0.5, "First camera reconnect delay (s).", low=0, flag="--reconnect-min")
    reconnect_max_seconds: float = setting(30.0, "Longest reconnect delay (s).", low=0, flag="--reconnect-max")
    max_frames: int = setting(0, "Stop after this many frames (0 = never).", low=0)  # tests, dry runs
    loop: bool = setting(False, "With a folder camera, start again at the end.")  # long dry runs

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class CollectConfig:
    camera: str = setting(help="Same sources as 'door run'.")
    label: str = setting(help="Class of the photos, e.g. smile or no_smile.")  # the class folder they go to
    out: Path = setting(help="Dataset folder; photos go to OUT/LABEL/.")
    # so consecutive shots differ
    every: float = setting(1.0, "Seconds between photos.", low=0)
    # 0 = until the source ends or Ctrl-C
    count: int = setting(0, "Stop after this many photos (0 = until Ctrl-C).", low=0)
    # none: whole frames, what the door sees and what the face-landmark model trains on best
    face: str = setting("none", "Save only the largest face, with room around it for the landmark model (twice "
                        "the face box; no face, no photo); default: the whole frame.", choices=DETECTORS,
                        flag="--detector", aliases=("--face",))

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[Path, ...]  # export folders to time, e.g. a HappyModel and a ResNet50 int8
    threads: int = 1  # onnxruntime threads: 1 is what the door uses
    frames: int = 200  # frames per latency measurement (and /predict requests for the overhead)
    frame_size: tuple[int, int] = (480, 640)  # camera frame (h, w) decoded and resized like the door does
    http: bool = True  # measure /predict overhead over the bare Predictor on loopback
