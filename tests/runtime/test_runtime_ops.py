"""Operations: systemd's notify protocol over a real unix datagram socket (READY, WATCHDOG from the decision loop,
silence when the loop hangs, STOPPING), and the event log rotated by size."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from runtime_support import frame, free_port

from toolkit.cli import main
from toolkit.runtime.actuator import make_actuator
from toolkit.runtime.camera import FrameSource
from toolkit.runtime.core.config import DoorConfig, LogRotation, ModelConfig, PolicyConfig
from toolkit.runtime.core.eventlog import EventLog
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.core.sdnotify import Notifier
from toolkit.runtime.door import DoorLoop


@pytest.fixture
def notify_socket():
    """A bound unix datagram socket, as systemd's; yields (address for NOTIFY_SOCKET, socket)."""
    folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # short: a socket path has at most 107 bytes
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path, sock
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


def _receive(sock, seconds: float) -> list[str]:
    """Every datagram that arrives within ``seconds``."""
    out, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return out


class HangingCamera(FrameSource):
    """Frames until ``hang`` is set, then a read() that blocks like a wedged driver until ``release``."""

    live = False

    def __init__(self) -> None:
        self.hang, self.release = threading.Event(), threading.Event()

    def read(self):
        if self.hang.is_set():
            self.release.wait()
        return frame(40)


def test_watchdog_pings_come_from_the_decision_loop_and_stop_when_it_hangs(export_dir, notify_socket):
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # 0.2 s: a ping every 0.05 s
    assert notifier.watchdog_interval == pytest.approx(0.05)
    camera = HangingCamera()
    cfg = DoorConfig(camera="test", policy=PolicyConfig(k=2, n=3), fps=100)
    loop = DoorLoop(ModelHolder(ModelConfig(export_dir)), camera, cfg, make_actuator("log", 17, True))
    loop.heartbeats.append(notifier.watchdog)
    assert notifier.ready("door running")
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    running = _receive(sock, 0.6)
    assert running[0] == "READY=1\nSTATUS=door running"
    assert 5 <= running.count("WATCHDOG=1") <= 13, running  # ~every 0.05 s, not once per frame (~60 frames)
    assert loop.frames > running.count("WATCHDOG=1")
    camera.hang.set()  # the camera wedges: the loop stops, and so do the pings (the ticker thread still runs)
    _receive(sock, 0.1)  # a ping already on its way
    assert _receive(sock, 0.5) == []
    camera.release.set()
    assert "WATCHDOG=1" in _receive(sock, 0.5)  # unwedged: pings again
    stop.set()
    thread.join(5)
    loop.close()
    assert notifier.stopping() and _receive(sock, 0.5) == ["STOPPING=1"]


def test_abstract_sockets_foreign_watchdogs_and_no_systemd():
    name = f"toolkit-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _receive(sock, 0.5) == ["READY=1"]
        foreign = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
        assert foreign.watchdog_interval is None and not foreign.watchdog()  # pid 1's watchdog, not ours
    finally:
        sock.close()
    assert not Notifier({}).ready() and not Notifier({}).watchdog()  # run by hand: no-ops
    gone = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert not gone.ready() and not gone.ready()  # a missing socket is a warning, never an exception


def test_door_run_says_ready_once_the_api_listens_and_stopping_on_sigterm(export_dir, tmp_path, notify_socket):
    path, sock = notify_socket
    cam = tmp_path / "cam"
    cam.mkdir()
    Image.fromarray(frame(40)).save(cam / "0.png")
    port = free_port()
    cmd = [sys.executable, "-m", "toolkit", "door", "run", "--model", str(export_dir), "--camera", str(cam),
           "--loop", "--fps", "20", "--serve", "--port", str(port), "--quiet"]  # fmt: skip
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sock.settimeout(30)
        first = sock.recv(4096).decode()
        while first == "WATCHDOG=1":  # the loop may start pinging before uvicorn has bound the port
            first = sock.recv(4096).decode()
        assert first == "READY=1"
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # listening when READY came
        assert "WATCHDOG=1" in _receive(sock, 0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "STOPPING=1" in _receive(sock, 0.5)


def test_event_log_rotates_at_its_size_cap(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=200, backups=2)
    lines = [json.dumps({"n": i, "pad": "x" * 20}) for i in range(40)]  # 42 bytes each: 4 a file
    for line in lines:
        log.write(line + "\n")
    log.close()
    files = [path, path.with_name("events.jsonl.1"), path.with_name("events.jsonl.2")]
    assert all(f.exists() and 0 < f.stat().st_size <= 200 for f in files)
    assert not path.with_name("events.jsonl.3").exists()
    kept = [line for f in reversed(files) for line in f.read_text().splitlines()]
    assert kept == lines[-len(kept):] and len(kept) >= 9  # the newest lines, in order, none lost in between

    log = EventLog(path, max_bytes=200, backups=0)  # no backups: the file starts over
    for line in lines:
        log.write(line + "\n")
    log.close()
    assert path.stat().st_size <= 200 and path.read_text().splitlines()[-1] == lines[-1]


def test_door_event_log_stays_under_its_cap(export_dir, tmp_path, capsys):
    cam = tmp_path / "cam"
    cam.mkdir()
    for i, v in enumerate([40, 220, 220, 40]):
        Image.fromarray(frame(v)).save(cam / f"{i}.png")
    log = tmp_path / "logs" / "events.jsonl"
    rc = main(["door", "run", "--model", str(export_dir), "--camera", str(cam), "--loop", "--max-frames", "60",
               "--event-log", str(log), "--event-log-max-bytes", "2000", "--event-log-backups", "1", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in log.parent.iterdir()) == ["events.jsonl", "events.jsonl.1"]
    assert all(p.stat().st_size <= 2000 for p in log.parent.iterdir())
    assert json.loads(log.read_text().splitlines()[-1])["reason"] == "door loop stopped"
    assert LogRotation().event_log_max_bytes == 10 << 20  # the default cap
    rc = main(["door", "run", "--model", str(export_dir), "--camera", str(cam), "--event-log-max-bytes", "-1"])
    assert rc != 0 and "error: --event-log-max-bytes" in capsys.readouterr().err


UNIT = Path(__file__).resolve().parents[2] / "deploy" / "toolkit-door.service"


def _unit_settings() -> dict[str, list[str]]:
    """{key: [values]} of the shipped unit file, continuation lines joined, comments dropped."""
    text = UNIT.read_text().replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_shipped_unit_is_notify_with_a_watchdog_and_its_flags_exist(tmp_path):
    import shlex

    import typer

    from toolkit.cli import app

    unit = _unit_settings()
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"] and unit["Restart"] == ["on-failure"]
    assert int(unit["WatchdogSec"][0]) > DoorConfig(camera="x").reconnect_max_seconds  # a camera retry is not a hang
    assert unit["ProtectSystem"] == ["strict"] and unit["StateDirectory"] and unit["LogsDirectory"]
    argv = shlex.split(unit["ExecStart"][0])
    assert argv[1:3] == ["door", "run"]
    model = argv[argv.index("--model") + 1]  # the committed door model: the face-landmark chain
    assert model.endswith("/exported/happy-face") and (UNIT.parents[1] / "exported" / "happy-face").is_dir()
    run = typer.main.get_command(app).commands["door"].commands["run"]
    known = {opt for p in run.params for opt in p.opts}
    assert {a for a in argv if a.startswith("--")} <= known  # every flag the unit passes exists
    assert "/var/log/toolkit-door/events.jsonl" in argv  # the LogsDirectory, writable under ProtectSystem=strict
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax was not verified")
    copy = tmp_path / UNIT.name  # verify wants the executable to exist: /bin/true stands in for the venv's toolkit
    copy.write_text(UNIT.read_text().replace("/opt/toolkit-door/bin/toolkit", "/bin/true"))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_shipped_unit_scores_at_most_2_in_systemd_analyze_security_and_keeps_what_the_door_needs():
    """The sandbox without breaking the door: the camera and GPIO devices, setpriority, the credential, memory."""
    import re

    unit = _unit_settings()
    assert "PrivateDevices" not in unit and unit["DevicePolicy"] == ["closed"]
    assert {"char-video4linux rw", "char-gpiochip rw"} <= set(unit["DeviceAllow"])
    assert not any(v.startswith("~") and "@resources" in v for v in unit["SystemCallFilter"])  # setpriority
    assert unit["LoadCredential"] == ["token:/etc/toolkit-door/token"] and unit["MemoryMax"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    result = subprocess.run([analyze, "security", "--offline=true", str(UNIT)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    if found is None and "offline" in result.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {result.stderr.strip()[:100]}")
    assert found is not None, result.stdout[-500:] + result.stderr[-500:]
    assert float(found.group(1)) <= 2.0, result.stdout
