"""Security of the door API: loopback by default, a warning when exposed, wrong unlock tokens limited per client
(429), a compare that leaks neither content nor length, /predict and /v2 infer never moving the relay (gpiozero
mock pin), and the token never in a log line, an error message, the event log or /metrics."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from door_support import (
    HAPPY,
    SAD,
    GuardedServer,
    capture_logs,
    folder_camera,
    formatted,
    free_port,
    jpeg,
    make_export,
    mock_pins,
)

from toolkit.runtime import security
from toolkit.runtime.actuator import GpioActuator, LogActuator
from toolkit.runtime.camera import FolderSource
from toolkit.runtime.core.config import DoorConfig, ModelConfig, PolicyConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.door import DoorLoop
from toolkit.runtime.security import UnlockLimiter, exposure_warning, tokens_match
from toolkit.runtime.server import create_app

TOKEN = secrets.token_hex(16)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("sec") / "tiny")


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- binding -------------------------------------------------------------------------------------------------


def test_loopback_by_default_and_a_warning_when_exposed(export, monkeypatch):
    import typer

    from toolkit.cli import app
    from toolkit.runtime import server, service

    assert ServeConfig().host == "127.0.0.1"
    door_cli = typer.main.get_command(app).commands["door"]
    for name in ("serve", "run"):
        host = next(p for p in door_cli.commands[name].params if p.name == "host")
        assert host.default == "127.0.0.1", name
    assert [security.is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost")] == [True] * 5
    assert not any(security.is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.20", "door.local", ""))

    served = []
    monkeypatch.setattr(server, "serve", lambda app, config, **_: served.append(config.host))  # no socket is opened
    monkeypatch.delenv("TOOLKIT_DOOR_TOKEN", raising=False)
    for host, token, expect in [
        ("127.0.0.1", None, None),
        ("::1", None, None),
        ("0.0.0.0", None, "no unlock token is configured"),
        ("192.168.1.20", None, "no unlock token is configured"),
        ("0.0.0.0", "s3cr3t-value-of-the-door", "sends the unlock token in clear"),
    ]:
        if token:
            monkeypatch.setenv("TOOLKIT_DOOR_TOKEN", token)
        with capture_logs(logging.WARNING) as records:
            service.serve_model(ModelConfig(export), ServeConfig(host=host))
        warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING and "--host" in r.getMessage()]
        if expect is None:
            assert warnings == [], (host, warnings)
        else:
            assert len(warnings) == 1 and expect in warnings[0] and f"--host {host}" in warnings[0], warnings
            assert token is None or token not in warnings[0]
    assert served == ["127.0.0.1", "::1", "0.0.0.0", "192.168.1.20", "0.0.0.0"]
    assert exposure_warning("0.0.0.0", False, "MY_ENV") is not None and "MY_ENV" in exposure_warning(
        "0.0.0.0", False, "MY_ENV"
    )


# --- the unlock route ----------------------------------------------------------------------------------------


def test_wrong_tokens_are_limited_per_client_and_the_right_one_always_opens(export):
    clock = FakeClock()
    limiter = UnlockLimiter(max_failures=3, window=60.0, clock=clock)
    with mock_pins() as pins:
        relay = GpioActuator(17)
        holder = ModelHolder(ModelConfig(export))
        cfg = DoorConfig(camera="x", policy=PolicyConfig(open_seconds=0.3, cooldown_seconds=0))
        door = DoorLoop(holder, FolderSource(folder_camera(export.parent / "cam0", [SAD])), cfg, relay)
        app = create_app(holder, ServeConfig(), door=door, token=TOKEN, limiter=limiter)
        with GuardedServer(app) as live, httpx.Client(base_url=live.url, timeout=5) as c:
            # No credentials (what a page on another origin makes the browser send): a plain 401, never counted.
            for _ in range(10):
                r = c.post("/door/open")
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
                assert c.get("/door/live.jpg").status_code == 401
            assert limiter.retry_after("127.0.0.1") is None
            for wrong in ("x", TOKEN[:-1], TOKEN + "x", "y"):
                r = c.post("/door/open", headers=_auth(wrong))
            assert r.status_code == 429 and r.headers["retry-after"] == "60"
            assert "too many wrong tokens" in r.json()["error"]
            # A forged address does not escape the limit: with no trusted proxy the limit keys on the TCP peer.
            r = c.post("/door/open", headers={**_auth("z"), "X-Forwarded-For": "10.9.8.7", "X-Real-IP": "10.9.8.7"})
            assert r.status_code == 429
            assert relay.unlocked is False
            # The right token is checked first: it opens even from the client over its limit.
            r = c.post("/door/open", headers=_auth(TOKEN))
            assert r.status_code == 200 and r.json() == {"state": "open", "seconds": 0.3}
            assert pins.pin(17).state  # the positive control: a valid unlock does move the relay
            assert c.post("/door/open", headers=_auth("x")).status_code == 401  # a success forgave the past
            metrics = c.get("/metrics").text
            assert 'toolkit_door_events_total{event="unlock_rate_limited"} 2.0' in metrics
            assert 'toolkit_door_events_total{event="unlock_refused"} 4.0' in metrics
        deadline = time.monotonic() + 2
        while pins.pin(17).state and time.monotonic() < deadline:  # the watchdog locks (no loop is running)
            time.sleep(0.02)
        assert [s.state for s in pins.pin(17).states] == [False, True, False]
        door.close()


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(export):
    """The issue's lock-outs: ten guests through the proxy, five wrong tokens each, then the owner's token."""
    holder = ModelHolder(ModelConfig(export))
    limiter = UnlockLimiter(max_failures=5, window=60.0)
    config = ServeConfig(trusted_proxy=("127.0.0.0/8",))
    door = DoorLoop(holder, FolderSource(folder_camera(export.parent / "cam1", [SAD])),
                    DoorConfig(camera="x", policy=PolicyConfig(open_seconds=0.2, cooldown_seconds=0)), LogActuator())
    app = create_app(holder, config, door=door, token=TOKEN, limiter=limiter)
    with GuardedServer(app) as live, httpx.Client(base_url=live.url, timeout=5) as c:
        for guest in range(10):
            for _ in range(6):
                r = c.post("/door/open", headers={**_auth("guess"), "X-Forwarded-For": f"10.0.0.{guest}"})
            assert r.status_code == 429
        # A guest cannot pose as the owner: the proxy appends what it saw, and only the right-most entry counts.
        r = c.post("/door/open", headers={**_auth("guess"), "X-Forwarded-For": "192.168.1.50, 10.0.0.3"})
        assert r.status_code == 429
        assert c.post("/door/open", headers={**_auth("typo"), "X-Forwarded-For": "192.168.1.50"}).status_code == 401
        r = c.post("/door/open", headers={**_auth(TOKEN), "X-Forwarded-For": "192.168.1.50"})
        assert r.status_code == 200
    door.close()


def test_limiter_per_client_and_bounded_memory():
    clock = FakeClock()
    lim = UnlockLimiter(max_failures=2, window=10.0, clock=clock, max_clients=50)
    lim.failed("a")
    assert lim.retry_after("a") is None
    lim.failed("a")
    assert lim.retry_after("a") == pytest.approx(10.0) and lim.retry_after("b") is None  # per client
    clock.t += 10.0
    assert lim.retry_after("a") is None  # a sliding window, not a ban
    for i in range(500):  # many addresses: no shared ceiling that would lock out everyone else
        lim.failed(f"10.1.{i // 250}.{i % 250}")
    assert lim.retry_after("fresh") is None
    assert len(lim._clients) <= 50
    clock.t += 11
    assert lim.retry_after("fresh") is None and lim._clients == {}


def test_token_compare_is_constant_time_over_equal_length_digests(export, monkeypatch):
    calls = []
    real = security.hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    assert tokens_match(TOKEN, TOKEN) and not tokens_match(TOKEN[:-1], TOKEN) and not tokens_match("", TOKEN)
    assert not tokens_match("é" * 40, TOKEN) and tokens_match("é\udcff", "é\udcff")
    app = create_app(ModelHolder(ModelConfig(export)), ServeConfig(unlock_max_failures=100), token=TOKEN)
    with GuardedServer(app) as live:
        for n in (1, 31, 32, 33, 1000, 6000):
            assert httpx.post(f"{live.url}/door/open", headers=_auth("a" * n)).status_code == 401
    # Every comparison, whatever the length sent, ran on two 32-byte digests: no early exit on length.
    assert len(calls) == 11 and set(calls) == {(32, 32)}


# --- /predict and /v2 infer never move the door ---------------------------------------------------------------


def test_predict_and_infer_never_move_the_relay(export, tmp_path):
    # A door that a single happy frame would open (k = n = 1), watching a sad scene, while clients send happy images.
    cam = folder_camera(tmp_path / "cam", [SAD, SAD + 5])
    holder = ModelHolder(ModelConfig(export))
    with mock_pins() as pins:
        relay = GpioActuator(17)
        cfg = DoorConfig(camera=str(cam), policy=PolicyConfig(k=1, n=1, open_seconds=0.3, stale_seconds=5), fps=30)
        door = DoorLoop(holder, FolderSource(cam, loop=True), cfg, relay)
        stop = threading.Event()
        thread = threading.Thread(target=door.run, args=(stop,), daemon=True)
        thread.start()
        app = create_app(holder, ServeConfig(), door=door, token=TOKEN)
        happy = np.full((4, 64, 64, 3), HAPPY, np.float32)
        try:
            with GuardedServer(app) as live, httpx.Client(base_url=live.url, timeout=10) as c:
                for i in range(20):
                    r = c.post("/predict", content=jpeg(HAPPY))
                    assert r.status_code == 200 and r.json()["decision"] is True
                    r = c.post("/predict", files={"file": ("smile.png", jpeg(HAPPY, fmt="PNG"), "image/png")})
                    assert r.json()["label"] == "smile"
                    doc = {"inputs": [{"name": "image", "shape": [4, 64, 64, 3], "datatype": "FP32",
                                       "data": happy.ravel().tolist() if i < 3 else [HAPPY] * happy.size}]}  # fmt: skip
                    path = "/v2/models/tiny/infer" if i % 2 else "/v2/models/tiny/versions/1/infer"
                    r = c.post(path, json=doc)
                    assert r.status_code == 200 and min(r.json()["outputs"][0]["data"]) > 0.9
                assert c.get("/v2/health/ready").status_code == 200  # the door was deciding all along
                assert not pins.pin(17).state and [s.state for s in pins.pin(17).states] == [False]
                assert door.frames > 0 and sum(door.policy._votes) == 0
                # Positive control: the relay on this very door does move for an authenticated unlock.
                assert c.post("/door/open", headers=_auth(TOKEN)).status_code == 200 and pins.pin(17).state
                deadline = time.monotonic() + 2
                while pins.pin(17).state and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert [s.state for s in pins.pin(17).states] == [False, True, False]  # locked after 0.3 s
        finally:
            stop.set()
            thread.join(timeout=5)
            door.close()


# --- the token stays secret -----------------------------------------------------------------------------------


class _ExplodingDoor:
    """Manual unlock raises an unexpected error: the 500 path, which logs a traceback."""

    listeners: list = []

    def ready(self):
        return True, "ready"

    def manual_open(self):
        raise RuntimeError("relay driver crashed")


def _secret_probes(c: httpx.Client, in_urls: bool = True) -> list[httpx.Response]:
    """Requests carrying the token (or near misses) every way a client might send it."""
    rs = []
    for wrong in (TOKEN[:-1], TOKEN + "0", TOKEN.upper(), TOKEN[:8]):
        rs.append(c.post("/door/open", headers=_auth(wrong)))
    rs.append(c.post("/door/open", headers={"Authorization": f"Basic {TOKEN}"}))
    rs.append(c.post("/door/open", headers={"Authorization": TOKEN}))
    if in_urls:  # uvicorn's TRACE level (never set by the CLI) logs request URLs; headers and bodies it masks
        rs.append(c.post(f"/door/open?token={TOKEN}"))
        rs.append(c.post(f"/door/open/{TOKEN}"))
    rs.append(c.post("/door/open", headers={"X-Api-Key": TOKEN}, content=TOKEN.encode()))
    rs.append(c.post("/predict", headers=_auth(TOKEN), content=TOKEN.encode()))  # a 400 with the token attached
    rs.append(c.post("/v2/models/tiny/infer", headers=_auth(TOKEN), content=b"{"))
    return rs


def test_token_never_in_logs_or_error_messages_in_process(export, capfd):
    config = ServeConfig(unlock_max_failures=9)
    app = create_app(ModelHolder(ModelConfig(export)), config, door=_ExplodingDoor(), token=TOKEN)
    server = GuardedServer(app, log_level="trace")  # uvicorn's logging setup replaces handlers: capture after it
    with capture_logs() as records:  # every logger, TRACE level (uvicorn's most verbose)
        with server as live:
            with httpx.Client(base_url=live.url, timeout=5) as c:
                responses = _secret_probes(c, in_urls=False)
                responses.append(c.post("/door/open", headers=_auth(TOKEN)))  # the right token: a 500, a traceback
            with httpx.Client(base_url=live.url, timeout=5) as c:  # a 500 ends its keep-alive connection
                for _ in range(9):  # the right token forgave the earlier misses: nine more reach the limit
                    responses.append(c.post("/door/open", headers=_auth("wrong")))
                responses.append(c.post("/door/open", headers=_auth("wrong")))  # past the limit now: 429
                responses.append(c.post("/door/open", headers=_auth(TOKEN)))  # the right one still gets through
    statuses = [r.status_code for r in responses]
    assert statuses[:7] == [401] * 7 and statuses[-12] == 500 and statuses[-2:] == [429, 500], statuses
    log_text = formatted(r for r in records if not r.name.startswith(("httpx", "httpcore")))  # those are the client
    out, err = capfd.readouterr()
    assert "unexpected error on POST /door/open" in log_text and "Traceback" in log_text  # the 500 was logged
    assert "HTTP connection made" in log_text and "ASGI [1] Started scope" in log_text  # TRACE really was on
    for where, text in [("logs", log_text), ("stdout", out), ("stderr", err)]:
        assert TOKEN not in text and TOKEN.upper() not in text and TOKEN[:-1] not in text, where
    for r in responses:
        assert TOKEN[:8] not in r.text and TOKEN[:8] not in str(r.headers), (r.status_code, r.text)


def test_token_never_in_the_output_of_a_real_door_run(export, tmp_path):
    """``toolkit door run --serve`` as deployed (default host, info logging), fed wrong and right tokens."""
    cam = folder_camera(tmp_path / "cam", [SAD, SAD + 5, HAPPY])
    events = tmp_path / "events.jsonl"
    port = free_port()
    env = {**os.environ, "TOOLKIT_DOOR_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "toolkit", "door", "run", "--model", str(export), "--camera", str(cam), "--loop",
           "--fps", "10", "--serve", "--port", str(port), "--open-seconds", "0.3", "--unlock-max-failures", "3",
           "--event-log", str(events)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the door did not start"
            try:
                if httpx.get(f"{url}/v2/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        listening = _listening_addresses(port)
        assert listening == {"127.0.0.1"}, listening  # the default bind, as seen by the kernel
        with httpx.Client(base_url=url, timeout=5) as c:
            assert c.post("/door/open", headers=_auth(TOKEN[:-1])).status_code == 401
            assert c.post("/door/open", headers=_auth(TOKEN)).status_code == 200
            statuses = [r.status_code for r in _secret_probes(c)]
            statuses.append(c.post("/door/open", headers=_auth(TOKEN)).status_code)
            assert 401 in statuses and 429 in statuses and 400 in statuses, statuses
            metrics = c.get("/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "door UNLOCKED" in err and "relay locked" in out  # info logging was on and reached stderr
    for where, text in [("stdout", out), ("stderr", err), ("event log", events.read_text()), ("/metrics", metrics)]:
        assert TOKEN not in text and TOKEN[:-1] not in text, where
    assert "Traceback" not in err


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port``, from /proc/net/tcp{,6}."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                raw = bytes.fromhex(addr)
                # /proc stores each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found


def test_relay_failure_on_manual_unlock_is_a_503_and_locked(export):
    class Broken(LogActuator):
        def _set(self, unlocked: bool) -> None:
            if unlocked:
                raise OSError("GPIO busy")
            super()._set(unlocked)

    holder = ModelHolder(ModelConfig(export))
    camera = FolderSource(folder_camera(export.parent / "cam1", [SAD]))
    door = DoorLoop(holder, camera, DoorConfig(camera="x"), Broken())
    app = create_app(holder, ServeConfig(), door=door, token=TOKEN)
    with GuardedServer(app) as live:
        r = httpx.post(f"{live.url}/door/open", headers=_auth(TOKEN))
        assert r.status_code == 503 and "unlock failed (GPIO busy)" in r.json()["error"] and TOKEN not in r.text
        ready = httpx.get(f"{live.url}/v2/health/ready")
        assert ready.status_code == 503 and "relay" in ready.json()["reason"]
    assert door.actuator.unlocked is False
    door.close()
