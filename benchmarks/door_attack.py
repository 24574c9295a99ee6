"""The door under attack on loopback: can the owner still open it, and does the door keep deciding?

    python -m benchmarks.door_attack [--parts token,flood,retained,diskfull] [--seconds 20] [--code CHECKOUT]

Everything runs on 127.0.0.1 against a real ``toolkit door run`` process (folder camera, dry-run relay) and a
real mosquitto; every part is bounded in time (``--seconds``) and in requests.

- ``token``: the owner's correct-token unlocks (``POST /door/open`` 10 a second, every 2 s behind the proxy;
  over MQTT 2 a second) while
  (a) 10 loopback addresses (127.0.0.2-11) send 5 wrong tokens a second each, (b) a guest behind the reverse
  proxy (127.0.0.1 forwarding ``X-Forwarded-For``, as nginx and Caddy do) sends one wrong token a second,
  (c) 5 wrong MQTT commands a second. Target: 100 % opened, p99 < 50 ms.
- ``flood``: 3 clients post 25-megapixel PNGs of several shapes to ``/predict`` back to back; the server's
  RSS (idle, peak) and the door's decisions/s and decision p99, alone and during. Target: peak within idle +
  250 MB, the frame rate held.
- ``retained`` and ``diskfull``: :mod:`benchmarks.door_attack_records`.

``--code`` runs the door from another checkout (e.g. the main branch before the fix) for before/after figures.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks import cli
from benchmarks.door_attack_rig import (
    CHECKOUT,
    Broker,
    Door,
    MqttClient,
    camera_folder,
    free_port,
    summary,
    supports,
    unit_environment,
)
from benchmarks.door_load import machine_load
from toolkit.runtime.bench import percentiles, sample_jpeg
from toolkit.runtime.security import new_token

# 25 MP each: a square, the 1-pixel sliver (both ways), a 4:1 strip, a wide frame; all under 25 MP.
FLOOD_SHAPES = ((5000, 5000), (1, 24_999_999), (24_999_999, 1), (10000, 2500), (8192, 3051))


def _owner_http(url: str, token: str, seconds: float, xff: str | None = None, every: float = 0.1
                ) -> tuple[int, int, list[float]]:  # fmt: skip
    import httpx

    headers = {"Authorization": f"Bearer {token}", **({"X-Forwarded-For": xff} if xff else {})}
    ok = total = 0
    ms: list[float] = []
    end = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as c:
        while time.monotonic() < end:
            start = time.perf_counter()
            r = c.post("/door/open", headers=headers)
            ms.append((time.perf_counter() - start) * 1000)
            total += 1
            ok += r.status_code == 200
            time.sleep(max(0.0, every - (time.perf_counter() - start)))
    return ok, total, ms


def _owner_mqtt(mqtt: MqttClient, token: str, seconds: float) -> tuple[int, int, list[float]]:
    ok = total = 0
    ms: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        mqtt.command(token)
        took = mqtt.wait_opened(start)
        total += 1
        if took is not None:
            ok += 1
            ms.append(took * 1000)
        time.sleep(max(0.0, 0.5 - (time.monotonic() - start)))
    return ok, total, ms


def _repeat(stop: threading.Event, period: float, fn) -> threading.Thread:
    def loop():
        while not stop.is_set():
            start = time.monotonic()
            try:
                fn()
            except Exception:  # an attacker refused a connection is still attacking
                pass
            stop.wait(max(0.0, period - (time.monotonic() - start)))

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def _attackers(kind: str, url: str, broker_port: int, stop: threading.Event) -> list[threading.Thread]:
    import httpx

    wrong = {"Authorization": "Bearer wrong-guess-0123456789"}
    if kind == "addresses":
        threads = []
        for i in range(10):
            c = httpx.Client(base_url=url, timeout=10, transport=httpx.HTTPTransport(local_address=f"127.0.0.{i + 2}"))
            threads.append(_repeat(stop, 0.2, lambda c=c: c.post("/door/open", headers=wrong)))
        return threads
    if kind == "proxy":  # what the proxy sends for a guest: its own address as peer, the guest's appended
        c = httpx.Client(base_url=url, timeout=10)
        return [_repeat(stop, 1.0, lambda: c.post("/door/open", headers={**wrong, "X-Forwarded-For": "203.0.113.7"}))]
    mqtt = MqttClient(broker_port)
    return [_repeat(stop, 0.2, lambda: mqtt.command("wrong-guess-0123456789"))]


def token_part(code: Path, model: Path, seconds: float, out, extra: tuple[str, ...] = ()) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="door-attack-"))
    token = new_token()
    (tmp / "token").write_text(token)
    (tmp / "token").chmod(0o600)
    args = ["--model", str(model), "--camera", str(camera_folder(tmp / "cam")), "--loop", "--fps", "10",
            "--relay", "log", "--open-seconds", "0.2", "--cooldown", "0", "--stale", "5", "--token-file",
            str(tmp / "token"), "--unlock-window", "10", "--mqtt-discovery-prefix", "", "--quiet"]  # fmt: skip
    args += list(extra)
    proxy = supports(code, "--trusted-proxy")
    if proxy:
        args += ["--trusted-proxy", "127.0.0.1"]
    with Broker() as broker, Door(code, [*args, "--mqtt", f"127.0.0.1:{broker.port}"], port=free_port()) as door:
        owner_mqtt = MqttClient(broker.port)
        out(
            f"door: {'--trusted-proxy 127.0.0.1' if proxy else 'no --trusted-proxy setting (old checkout)'}; "
            f"--unlock-max-failures 5 per --unlock-window 10 s; owner measured for {seconds:g} s per case"
        )
        for label, kind in [("(a) 10 addresses x 5 wrong tokens/s", "addresses"),
                            ("(b) guest behind the proxy, 1 wrong token/s", "proxy"),
                            ("(c) 5 wrong MQTT commands/s", "mqtt")]:  # fmt: skip
            stop = threading.Event()
            threads = _attackers(kind, door.url, broker.port, stop)
            time.sleep(7)  # the attack has used up its budgets (5 wrong tokens) before the owner arrives
            if kind == "proxy":  # the owner comes through the proxy too, now and then (5 guesses fit in between)
                result = _owner_http(door.url, token, 3 * seconds, "192.168.1.10", every=2.0)
            else:
                result = _owner_http(door.url, token, seconds)
            out(summary(f"{label}: HTTP owner", *result))
            if kind == "mqtt":
                out(summary(f"{label}: MQTT owner (Home Assistant)", *_owner_mqtt(owner_mqtt, token, seconds / 2)))
            stop.set()
            for t in threads:
                t.join(5)
            time.sleep(11)  # the window (10 s) forgets this attack before the next case
        owner_mqtt.close()
    summaries = [line for line in door.final_log.splitlines() if "refused" in line]
    out(f"log: {len(summaries)} refusal lines in the door's log over the whole run (WARNING, --quiet on)")


def door_window(events: Path, start: float, end: float) -> dict:
    """The door's judged frames between two wall-clock times (with or without a face: both are decisions)."""
    import json

    ms = [e["latency_ms"] for e in map(json.loads, events.read_text().splitlines())
          if start <= e["time"] <= end and e["latency_ms"] > 0]  # fmt: skip
    p50, p99 = percentiles(ms)
    return {"frames": len(ms), "fps": len(ms) / max(end - start, 1e-9), "p50_ms": p50, "p99_ms": p99}


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (180, 120, 60)).save(buf, format="PNG")
    return buf.getvalue()


def flood_part(code: Path, model: Path, seconds: float, out) -> None:
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="door-attack-flood-"))
    events = tmp / "events.jsonl"
    args = ["--model", str(model), "--camera", str(camera_folder(tmp / "cam")), "--loop", "--fps", "10", "--relay",
            "log", "--stale", "5", "--event-log", str(events), "--quiet"]  # fmt: skip
    bodies = [_png(w, h) for w, h in FLOOD_SHAPES]
    out(
        "flood bodies: "
        + ", ".join(f"{w}x{h} PNG {len(b) // 1024} KB" for (w, h), b in zip(FLOOD_SHAPES, bodies, strict=True))
    )
    with Door(code, args, port=free_port()) as door:
        with httpx.Client(base_url=door.url, timeout=30) as c:
            for _ in range(5):
                c.post("/predict", content=sample_jpeg((480, 640)))
        time.sleep(2)
        start = time.time()
        time.sleep(seconds)
        alone = door_window(events, start, time.time())
        idle = door.status("VmRSS") / 1024
        peak, stop, statuses = [idle], threading.Event(), Counter()
        latencies: list[float] = []

        def sample():
            while not stop.wait(0.02):
                peak.append(door.status("VmRSS") / 1024)

        def client(i: int):
            with httpx.Client(base_url=door.url, timeout=120) as c:
                n = i
                while not stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        r = c.post("/predict", content=bodies[n % len(bodies)], headers={"Content-Type": "image/png"})
                        statuses[r.status_code] += 1
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1
                    latencies.append((time.perf_counter() - t0) * 1000)
                    n += 1

        threads = [threading.Thread(target=sample, daemon=True)] + [
            threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]  # fmt: skip
        start = time.time()
        for t in threads:
            t.start()
        time.sleep(seconds)
        during = door_window(events, start, time.time())
        stop.set()
        for t in threads:
            t.join(130)
        hwm = door.status("VmHWM") / 1024
    p50, p99 = percentiles(latencies)
    out(f"server RSS: idle {idle:.0f} MB, peak during the flood {max(peak):.0f} MB (+{max(peak) - idle:.0f} MB; "
        f"target +250), VmHWM over the whole life {hwm:.0f} MB")  # fmt: skip
    out(
        f"uploads: {sum(statuses.values())} in {seconds:g} s by 3 clients, statuses {dict(statuses)}, "
        f"latency p50 {p50:.0f} ms p99 {p99:.0f} ms"
    )
    for label, d in (("alone", alone), ("during the flood", during)):
        out(
            f"door {label}: {d['frames']} decisions ({d['fps']:.1f}/s), decision p50 {d['p50_ms']:.1f} ms "
            f"p99 {d['p99_ms']:.1f} ms"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts and print their figures."""
    from benchmarks.door_attack_records import diskfull_part, retained_part

    parser = cli.parser("door_attack", __doc__)
    parser.add_argument("--parts", default="token,flood,retained,diskfull", help="comma list of parts")
    parser.add_argument("--model", type=Path, default=CHECKOUT / "exported" / "happy", help="export folder")
    parser.add_argument("--seconds", type=cli.positive(float), default=20.0, help="length of each measurement")
    parser.add_argument("--code", type=Path, default=CHECKOUT, help="checkout whose door is attacked")
    parser.add_argument(
        "--door-args",
        default="",
        help="more options for the token part's door, e.g. '--inference-nice 0' (space-separated)",
    )
    parser.add_argument("--no-unit-env", action="store_true",
                        help="run the door without the shipped unit's Environment= settings (MALLOC_ARENA_MAX)")
    parser.add_argument("--broker-nagle", action="store_true",
                        help="leave mosquitto's default Nagle delay on (no set_tcp_nodelay): ~40 ms per MQTT hop")
    ns = parser.parse_args(argv)
    Door.base_env = {} if ns.no_unit_env else unit_environment()
    Broker.nodelay = not ns.broker_nagle
    parts = {"token": token_part, "flood": flood_part, "retained": retained_part, "diskfull": diskfull_part}

    def out(line: str) -> None:
        print(line, flush=True)

    out(f"door code: {ns.code.resolve()}; model {ns.model}; machine: {machine_load()}")
    out(f"door environment: {Door.base_env or 'as inherited'}; broker set_tcp_nodelay: {Broker.nodelay}")
    for name in ns.parts.split(","):
        out(f"--- {name}")
        extra = (tuple(ns.door_args.split()),) if name == "token" else ()
        parts[name](ns.code.resolve(), ns.model.resolve(), ns.seconds, out, *extra)
    out(f"machine: {machine_load()}")
    return 0


if __name__ == "__main__":
    cli.run(main)
