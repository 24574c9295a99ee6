"""The door's page under load, and a soak of its snapshot folder and event log (a benchmark, not a test).

    python -m benchmarks.door_page --model exported/happy [--clients 8,32,64] [--seconds 30] [--door-fps 10]
    python -m benchmarks.door_page --model exported/happy --soak 600 [--snapshot-cap-mb 5] [--door-arg=...]

Load: a real ``toolkit door run --serve`` process on a looping folder camera; first the door alone, then N
concurrent clients doing what open pages do, back to back: ``GET /``, ``/door/state``, ``/door/timeline``,
``/door/live.jpg`` and ``/door/snapshots`` (the last two with the token). Printed per client count: requests,
status counts (5xx must be 0), latency, and the door's frame->decision p99 beside its figure alone (the
issue's bound: within 10 %).

Soak: the door at full frame rate (``--fps 0``) with a snapshot every frame it may keep, for S seconds; every
10 s the snapshot folder and the event log are measured against their caps (``--snapshot-cap-mb``, and
``--event-log-cap-mb`` when the door rotates its log: pass the door's own option with ``--door-arg``).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from benchmarks import cli
from benchmarks.door_load import _door_line, machine_load
from toolkit.runtime.bench import ServerProcess, camera_like_frame, percentiles, split_model
from toolkit.runtime.manifest import load_manifest

TOKEN = "benchmark-token"
PAGE_REQUESTS = [("/", False), ("/door/state", False), ("/door/timeline", False), ("/door/live.jpg", True),
                 ("/door/snapshots", True)]  # fmt: skip
P99_BOUND = 1.10  # the door's decision p99 with pages open, at most this times its figure alone


def page_load(url: str, clients: int, seconds: float, out: Callable[[str], None] = print) -> dict:
    """``clients`` concurrent pages polling every endpoint back to back for ``seconds``."""
    import httpx

    statuses: Counter = Counter()
    errors: Counter = Counter()
    latencies: list[float] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def client_loop(client: httpx.AsyncClient, deadline: float) -> None:
        i = 0
        while time.monotonic() < deadline:
            path, needs_token = PAGE_REQUESTS[i % len(PAGE_REQUESTS)]
            i += 1
            start = time.perf_counter()
            try:
                r = await client.get(path, headers=auth if needs_token else None)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            statuses[r.status_code] += 1
            latencies.append((time.perf_counter() - start) * 1000.0)

    async def run() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(client_loop(client, deadline) for _ in range(clients)))

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    p50, p99 = percentiles(latencies)
    out(f"page  {clients} clients x {seconds:g} s: {total} requests ({total / elapsed:.1f}/s), "
        f"status {dict(sorted(statuses.items()))}, 5xx {server_errors}, transport errors {sum(errors.values())}, "
        f"p50 {p50:.1f} ms p99 {p99:.1f} ms")  # fmt: skip
    return {"clients": clients, "requests": total, "5xx": server_errors, "errors": sum(errors.values()),
            "p50_ms": p50, "p99_ms": p99}  # fmt: skip


def door_window(event_log: Path, start: float, end: float) -> dict:
    """The door's judged frames between two wall-clock times (with a face or not: the detector's time counts)."""
    import json

    ms = [e["latency_ms"] for e in map(json.loads, event_log.read_text().splitlines())
          if start <= e["time"] <= end and e["latency_ms"] > 0]  # fmt: skip
    p50, p99 = percentiles(ms)
    return {"frames": len(ms), "fps": len(ms) / max(end - start, 1e-9), "p50_ms": p50, "p99_ms": p99}


def _camera(folder: Path, frames: int = 8, size: tuple[int, int] = (480, 640)) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(frames):  # camera-sized JPEGs: the door decodes and resizes them like a live frame
        Image.fromarray(camera_like_frame(size, seed)).save(folder / f"{seed:03d}.jpg", quality=85)
    return folder


def _door(model: Path, threads: int, tmp: Path, camera: Path | None, fps: float, snapshot_every: float,
          cap_mb: float, extra: list[str]) -> tuple[ServerProcess, Path, Path]:  # fmt: skip
    camera = camera or _camera(tmp / "camera")
    events, snapshots = tmp / "events.jsonl", tmp / "snapshots"
    (tmp / "token").write_text(TOKEN)
    args = ["--camera", str(camera), "--loop", "--fps", f"{fps:g}", "--event-log", str(events), "--relay", "log",
            "--stale", "5", "--snapshots", str(snapshots), "--snapshot-cap-mb", f"{cap_mb:g}",
            "--snapshot-every", f"{snapshot_every:g}", "--token-file", str(tmp / "token"), *extra]  # fmt: skip
    return ServerProcess(model, threads, args), events, snapshots


def run_page_load(model: Path, threads: int, clients: tuple[int, ...], seconds: float, fps: float,
                  camera: Path | None, extra: list[str], out: Callable[[str], None] = print) -> dict:  # fmt: skip
    """The door alone, then under each count of page clients; the decision p99 compared with the figure alone."""
    out(f"machine: {machine_load()}")
    results: dict = {"pages": []}
    with tempfile.TemporaryDirectory(prefix="toolkit-bench-page-") as name:
        server, events, _ = _door(model, threads, Path(name), camera, fps, 1.0, 50.0, extra)
        with server:
            time.sleep(2)  # the first frames allocate: not part of the figures
            start = time.time()
            time.sleep(seconds)
            alone = door_window(events, start, time.time())
            out(_door_line(f"alone for {seconds:g} s (no page open)", alone))
            results["alone"] = alone
            for n in clients:
                start = time.time()
                load = page_load(server.url, n, seconds, out)
                load["door"] = door_window(events, start, time.time())
                ratio = load["door"]["p99_ms"] / alone["p99_ms"]
                verdict = "ok" if ratio <= P99_BOUND else f"OVER the {P99_BOUND:.2f}x bound"
                out(_door_line(f"with {n} pages", load["door"]) + f" (x{ratio:.2f} of alone: {verdict})")
                results["pages"].append(load)
    out(f"machine: {machine_load()}")
    return results


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _log_bytes(events: Path) -> int:
    return sum(p.stat().st_size for p in events.parent.glob(events.name + "*") if p.is_file())


def run_soak(model: Path, threads: int, seconds: float, cap_mb: float, log_cap_mb: float | None,
             camera: Path | None, extra: list[str], out: Callable[[str], None] = print) -> dict:  # fmt: skip
    """The door at full frame rate for ``seconds``, snapshot folder and event log measured every 10 s."""
    out(f"machine: {machine_load()}")
    worst = {"snapshots_mb": 0.0, "event_log_mb": 0.0}
    with tempfile.TemporaryDirectory(prefix="toolkit-bench-soak-") as name:
        server, events, snapshots = _door(model, threads, Path(name), camera, 0.0, 0.01, cap_mb, extra)
        with server:
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                time.sleep(min(10.0, max(0.0, seconds - (time.monotonic() - start))))
                snaps, log = _folder_bytes(snapshots) / 1e6, _log_bytes(events) / 1e6
                worst["snapshots_mb"] = max(worst["snapshots_mb"], snaps)
                worst["event_log_mb"] = max(worst["event_log_mb"], log)
                jpgs = sorted(snapshots.glob("*.jpg"))
                ages = f", oldest {jpgs[0].name}, newest {jpgs[-1].name}" if jpgs else ""  # the folder rotates
                out(f"soak  {time.monotonic() - start:5.0f} s: snapshots {snaps:.2f} MB ({len(jpgs)} kept{ages}; cap "
                    f"{cap_mb:g} MB), event log {log:.2f} MB"
                    + (f" (cap {log_cap_mb:g} MB)" if log_cap_mb else " (no cap given)"))  # fmt: skip
    snaps_ok = worst["snapshots_mb"] <= cap_mb
    log_ok = log_cap_mb is None or worst["event_log_mb"] <= log_cap_mb
    out(f"soak  snapshots at most {worst['snapshots_mb']:.2f} MB (cap {cap_mb:g}): {'ok' if snaps_ok else 'OVER'}; "
        f"event log at most {worst['event_log_mb']:.2f} MB: "
        + ("not checked (no --event-log-cap-mb)" if log_cap_mb is None else "ok" if log_ok else "OVER"))  # fmt: skip
    return worst


def main(argv: list[str] | None = None) -> int:
    """Load the page's endpoints beside a running door, or soak its snapshot folder and event log."""
    parser = cli.parser("door_page", __doc__)
    parser.add_argument("--model", type=Path, required=True, help="export folder, or FOLDER/FILE.onnx")
    parser.add_argument("--threads", type=cli.positive(int), default=1, help="onnxruntime threads (default 1)")
    parser.add_argument("--clients", type=cli.csv_ints, default=(8, 32, 64), help="open pages (default 8,32,64)")
    parser.add_argument("--seconds", type=cli.positive(float), default=30.0, help="each phase (default 30)")
    parser.add_argument("--door-fps", type=cli.positive(float), default=10.0, help="door frame rate (default 10)")
    parser.add_argument("--camera", type=Path, help="a folder of frames (default: generated camera-like frames)")
    parser.add_argument("--soak", type=cli.positive(float), help="instead: soak for this many seconds at full rate")
    parser.add_argument("--snapshot-cap-mb", type=cli.positive(float), default=5.0, help="soak: cap (default 5)")
    parser.add_argument("--event-log-cap-mb", type=cli.positive(float), help="soak: the event log's cap to check")
    parser.add_argument("--door-arg", action="append", default=[], help="extra 'toolkit door run' argument")
    ns = parser.parse_args(argv)
    load_manifest(split_model(ns.model)[0])  # a clear error for a wrong --model before a server starts
    out = lambda line: print(line, flush=True)  # noqa: E731
    if ns.soak:
        run_soak(ns.model, ns.threads, ns.soak, ns.snapshot_cap_mb, ns.event_log_cap_mb, ns.camera, ns.door_arg, out)
    else:
        run_page_load(ns.model, ns.threads, ns.clients, ns.seconds, ns.door_fps, ns.camera, ns.door_arg, out)
    return 0


if __name__ == "__main__":
    cli.run(main)
