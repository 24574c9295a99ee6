"""What :mod:`benchmarks.door_attack` runs against: a real door process (``toolkit door run``) on 127.0.0.1 with a
folder camera and a dry-run relay, a real mosquitto, and the owner's timed unlocks over HTTP and MQTT.

``code`` runs the door from another checkout (``--code /path/to/old/checkout``) for before/after figures; the
attackers and the measuring code are this checkout's either way.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from toolkit.runtime.bench import camera_like_frame, percentiles

CHECKOUT = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
UNIT = CHECKOUT / "deploy" / "toolkit-door.service"


def unit_environment(unit: Path = UNIT) -> dict[str, str]:
    """The ``Environment=`` settings of the shipped unit (e.g. ``MALLOC_ARENA_MAX=2``): the door is measured as
    a Pi runs it, since the allocator's arenas change its peak memory by tens of megabytes."""
    env = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            for item in line.split("=", 1)[1].split():
                key, _, value = item.strip('"').partition("=")
                env[key] = value
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def camera_folder(folder: Path, count: int = 8, size=(480, 640)) -> Path:
    """Camera-like JPEG frames for a folder camera."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(camera_like_frame(size, i)).save(folder / f"{i:03d}.jpg", quality=85)
    return folder


def supports(code: Path, flag: str) -> bool:
    """Does ``toolkit door run`` of that checkout know ``flag``? (an older checkout may not)"""
    p = subprocess.run([sys.executable, "-m", "toolkit", "door", "run", "--help"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(code), "COLUMNS": "200"}, cwd=code)  # fmt: skip
    return flag in p.stdout


class Door:
    """``toolkit door run ARGS`` of checkout ``code`` in a subprocess; stderr kept in a file.

    ``base_env`` (class-wide) is added to every door's environment: the shipped unit's settings by default.
    """

    base_env: dict[str, str] = {}

    def __init__(self, code: Path, args: list[str], env: dict | None = None, port: int | None = None) -> None:
        self.code, self.port = code, port
        self.url = f"http://127.0.0.1:{port}" if port else None
        self.cmd = [sys.executable, "-m", "toolkit", "door", "run", *args]
        if port:
            self.cmd += ["--serve", "--port", str(port)]
        self.env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1", "TOOLKIT_DOOR_TOKEN": "",
                    **self.base_env, **(env or {})}  # fmt: skip

    def __enter__(self) -> Door:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="door-attack-", suffix=".log")
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.code, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while self.url and not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the door did not start: {self.text()[-800:]}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/v2/health/ready")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def status(self, field: str) -> int:
        """A /proc/PID/status figure in kB (VmRSS: resident now; VmHWM: the peak so far)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.final_log = self.text()
        self.log.close()


class Broker:
    """mosquitto on a free loopback port (no persistence: retained messages live as long as the broker).

    ``nodelay`` (class-wide) sets mosquitto's ``set_tcp_nodelay``: without it each hop through the broker waits
    ~40 ms for Nagle's algorithm and the peer's delayed ACK (measured here: a command and its answer, 41.8 ms
    p50 vs 1.4 ms), which is the broker's setting, not the door's.
    """

    nodelay = True

    def __enter__(self) -> Broker:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="door-attack-mqtt-"))
        conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "allow_anonymous true"]
        if self.nodelay:
            lines.append("set_tcp_nodelay true")
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class MqttClient:
    """A paho client that records the door's unlock answers (``PREFIX/unlock``) and states."""

    def __init__(self, port: int, prefix: str = "toolkit/door") -> None:
        import paho.mqtt.client as paho

        self.prefix, self.answers, self.states = prefix, [], []
        self.cond = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"attack-{id(self)}")
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe([(f"{prefix}/unlock", 1), (f"{prefix}/state", 1)])
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the MQTT client could not subscribe")

    def _message(self, client, userdata, msg) -> None:
        with self.cond:
            text = msg.payload.decode("utf-8", "replace")
            (self.answers if msg.topic.endswith("/unlock") else self.states).append((time.monotonic(), text))
            self.cond.notify_all()

    def command(self, token: str, retain: bool = False) -> None:
        payload = json.dumps({"action": "UNLOCK", "token": token})
        self.client.publish(f"{self.prefix}/unlock/set", payload, qos=1, retain=retain)

    def wait_opened(self, since: float, timeout: float = 2.0) -> float | None:
        """Seconds from ``since`` to the first "opened" answer after it, or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, text in self.answers:
                    if t >= since and '"opened"' in text:
                        return t - since
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def summary(label: str, ok: int, total: int, ms: list[float]) -> str:
    p50, p99 = percentiles(ms)
    rate = 100.0 * ok / total if total else float("nan")
    return (
        f"{label}: {ok}/{total} correct-token unlocks opened ({rate:.1f} %), latency p50 {p50:.1f} ms p99 {p99:.1f} ms"
    )
