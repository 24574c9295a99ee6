"""Configs for the door runtime: frozen dataclasses, one field per ``toolkit door`` flag (TF-free).

Defaults are the safe choice: bind loopback, lock the door, require several agreeing frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.images import DEFAULT_MAX_PIXELS
from toolkit.settings import SettingError, check, setting

# The env var that holds the manual-unlock bearer token; no token configured means no manual unlock.
DEFAULT_TOKEN_ENV = "TOOLKIT_DOOR_TOKEN"


@dataclass(frozen=True)
class ModelConfig:
    folder: Path  # an export folder with manifest.json (``toolkit export`` writes one)
    file: str | None = None  # ONNX file inside it; None = the manifest's ``serve`` entry
    threads: int = 1  # onnxruntime intra-op threads: 1 keeps latency steady on a 4-core Pi sharing a camera
    # Refuse larger photos before decoding (decompression bombs); 25 MP = ~75 MB of RGB per request.
    max_pixels: int = min(DEFAULT_MAX_PIXELS, 25_000_000)
    watch_seconds: float = 0.0  # >0: poll the folder and hot-reload on change (SIGHUP always reloads)


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise: the API can unlock a door
    port: int = 8000
    max_body_bytes: int = 8 << 20  # a 12 MP JPEG is ~5 MB; anything bigger is refused unread (413)
    max_batch: int = 64  # v2 infer batch ceiling: bounds memory per request
    token_env: str = DEFAULT_TOKEN_ENV  # where the manual-unlock token comes from...
    token_file: Path | None = None  # ...or a file (wins over the env var; keep it mode 600)
    log_level: str = "info"  # uvicorn's; 'warning' keeps a Pi's SD card quiet
    # Request headers, then the body, must each arrive within this: a slow client (slowloris) is cut
    # off instead of holding a connection forever. 30 s moves an 8 MB body at ~2 Mbit/s.
    request_timeout_seconds: float = 30.0
    unlock_max_failures: int = 5  # wrong tokens per client for /door/open...
    unlock_window_seconds: float = 60.0  # ...within this window; then 429 until the window has passed
    inference_threads: int = 0  # requests inferring at once; the rest queue. 0 = one per core (cores - 1 with a door)
    inference_nice: int = 10  # beside a door, API inference threads run this much nicer (Linux): the door goes first


@dataclass(frozen=True)
class PolicyConfig:
    k: int = 3  # happy frames needed...
    n: int = 5  # ...among the last n frames: one lucky frame never opens the door
    threshold: float | None = None  # None = the manifest's per-file threshold (chosen at export)
    open_seconds: float = 3.0  # how long the relay stays energised
    cooldown_seconds: float = 5.0  # locked time after an opening, so one smile opens the door once
    stale_seconds: float = 2.0  # no frame for this long = in doubt = locked and not ready
    # A label to open on (e.g. the hand sign "5"): a frame votes when P(label) >= threshold (default 0.5);
    # lets a multi-class export drive the door. No hand / no face = no vote. None = the binary model's yes.
    open_on: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"k-of-n needs 1 <= k <= n, got k={self.k} n={self.n}")
        if self.open_seconds <= 0 or self.cooldown_seconds < 0 or self.stale_seconds <= 0:
            raise ValueError("open/stale seconds must be > 0 and cooldown >= 0")


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
    camera: str  # device index, RTSP/HTTP URL, video file, 'picamera2', or a folder of images
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    relay: str = "log"  # 'log' (dry run) or 'gpio'
    relay_pin: int = 17  # BCM pin number of the relay driver
    active_high: bool = True  # False for relay boards that energise on a low pin
    # 'haar' or 'blazeface' crop the largest face first (no face, no vote); None = the export's detector, if any
    face: str | None = None
    fps: float = 0.0  # >0 caps the frame rate (saves CPU); 0 = as fast as frames come
    event_log: Path | None = None  # JSON lines: time, probability, decision, latency
    event_log_rotation: LogRotation = field(default_factory=LogRotation)
    # The frames that opened the door and a sample of the others, for review on the page; None = off
    # (``toolkit door run`` defaults it to $STATE_DIRECTORY/snapshots under systemd).
    snapshots: Path | None = None
    snapshot_cap_mb: float = 200.0  # oldest dropped above this: ~3,000 VGA frames, a small share of an SD card
    snapshot_every: float = 10.0  # seconds between two kept frames that did not open the door (0 = openings only)
    labelled: Path | None = None  # the page's relabelled snapshots, a folder per label; None = SNAPSHOTS/labelled
    reconnect_min_seconds: float = 0.5  # camera loss: first retry delay...
    reconnect_max_seconds: float = 30.0  # ...doubling up to this
    max_frames: int = 0  # >0 stops after this many frames (tests, dry runs)
    loop: bool = False  # a folder camera starts again at the end (long dry runs)


@dataclass(frozen=True)
class CollectConfig:
    camera: str  # same sources as ``door run``
    label: str  # the class folder the photos go to, e.g. 'smile'
    out: Path  # dataset root: photos land in out/label/
    every: float = 1.0  # seconds between saved photos, so consecutive shots differ
    count: int = 0  # >0 stops after this many photos; 0 = until the source ends or Ctrl-C
    face: str = "none"  # 'haar' or 'blazeface' save face crops, like the door sees them


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[Path, ...]  # export folders to time, e.g. a HappyModel and a ResNet50 int8
    threads: int = 1  # onnxruntime threads: 1 is what the door uses
    frames: int = 200  # frames per latency measurement (and /predict requests for the overhead)
    frame_size: tuple[int, int] = (480, 640)  # camera frame (h, w) decoded and resized like the door does
    http: bool = True  # measure /predict overhead over the bare Predictor on loopback
