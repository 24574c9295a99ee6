"""The door API under load: N concurrent clients posting to ``/predict``, alone and beside the door loop.

    python -m benchmarks.door_load --model exported/happy [--clients 8,32,64] [--seconds 60] [--with-door]

A real server process on 127.0.0.1 (``toolkit door serve``, or ``toolkit door run --serve`` with the door
loop on a folder camera in the same process), N concurrent asyncio clients posting a camera-sized JPEG
to ``/predict`` back to back for S seconds. Printed per run: requests, throughput, status counts (5xx
must be 0), transport errors, p50/p99 latency, the server's resident memory before and after; with the
door, its decision latency and frame rate from its event log, idle and under each load.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import cli
from toolkit.inference.manifest import load_manifest
from toolkit.runtime.bench import ServerProcess, camera_like_frame, percentiles, sample_jpeg, split_model

RSS_GROWTH_BOUND_MB = 32.0  # more than this over all runs of a bench is reported as growth


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (Linux /proc), None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_load() -> str:
    """Cores and load average, to read every figure against."""
    try:
        one, five, fifteen = os.getloadavg()
        return f"{os.cpu_count()} cores, load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min)"
    except OSError:
        return f"{os.cpu_count()} cores"


def load_test(
    url: str, clients: int, seconds: float, body: bytes, out: Callable[[str], None] = print, pid: int | None = None
) -> dict:
    """``clients`` concurrent connections POST /predict back to back for ``seconds``; every request is counted.

    One asyncio client process: cheaper per request than a thread per client, so on a small machine
    the client takes less CPU from the server it measures.
    """
    import httpx

    statuses: Counter = Counter()
    latencies: list[float] = []
    errors: Counter = Counter()  # transport errors by kind: no HTTP status at all

    async def client_loop(client: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                response = await client.post("/predict", content=body, headers={"content-type": "image/jpeg"})
            except httpx.HTTPError as exc:
                errors[f"{type(exc).__name__} after {time.perf_counter() - start:.1f} s"] += 1
                continue
            statuses[response.status_code] += 1
            latencies.append((time.perf_counter() - start) * 1000.0)

    async def run() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(client_loop(client, deadline) for _ in range(clients)))

    before = rss_mb(pid) if pid else None
    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    after = rss_mb(pid) if pid else None
    total = sum(statuses.values())
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    dropped = sum(errors.values())
    p50, p99 = percentiles(latencies)
    memory = ""
    if before is not None and after is not None:
        memory = f", server RSS {before:.1f} -> {after:.1f} MB ({after - before:+.1f})"
    out(
        f"load  {clients} clients x {seconds:g} s: {total} requests ({total / elapsed:.1f}/s), "
        f"status {dict(sorted(statuses.items()))}, 5xx {server_errors}, dropped {dropped}"
        f"{' ' + str(dict(errors)) if errors else ''}, p50 {p50:.1f} ms p99 {p99:.1f} ms "
        f"max {max(latencies, default=float('nan')):.0f} ms{memory}"
    )
    return {
        "clients": clients, "requests": total, "per_second": total / elapsed, "5xx": server_errors,
        "dropped": dropped, "p50_ms": p50, "p99_ms": p99, "rss_before_mb": before, "rss_after_mb": after,
    }  # fmt: skip


def door_window(event_log: Path, start: float, end: float) -> dict:
    """The door's frames between two wall-clock times: count, rate, decision latency p50/p99."""
    ms = []
    for line in event_log.read_text().splitlines():
        e = json.loads(line)
        if start <= e["time"] <= end and e["probability"] is not None:
            ms.append(e["latency_ms"])
    p50, p99 = percentiles(ms)
    return {"frames": len(ms), "fps": len(ms) / max(end - start, 1e-9), "p50_ms": p50, "p99_ms": p99}


def _door_line(label: str, d: dict) -> str:
    return (
        f"door  {label}: {d['frames']} decisions ({d['fps']:.1f}/s), "
        f"frame->decision p50 {d['p50_ms']:.2f} ms p99 {d['p99_ms']:.2f} ms"
    )


def run_load(
    model: Path, threads: int, clients: tuple[int, ...], seconds: float, body: bytes, frames: list[np.ndarray],
    with_door: bool, door_fps: float, out: Callable[[str], None] = print,
) -> dict:  # fmt: skip
    """Load /predict at each client count; then, with ``with_door``, again with the door loop in the server."""
    results: dict = {"serve": [], "door": []}
    out(f"machine: {machine_load()}")
    with ServerProcess(model, threads) as server:
        _warm(server.url, body)
        for n in clients:
            results["serve"].append(load_test(server.url, n, seconds, body, out, server.proc.pid))
    _memory_verdict("serve", results["serve"], out)
    if with_door:
        from PIL import Image

        with tempfile.TemporaryDirectory(prefix="toolkit-bench-door-") as tmp:
            camera = Path(tmp) / "camera"
            camera.mkdir()
            for i, f in enumerate(frames):  # camera-sized JPEGs: the door decodes and resizes like a live frame
                Image.fromarray(f).save(camera / f"{i:03d}.jpg", quality=85)
            events = Path(tmp) / "events.jsonl"
            door_args = ["--camera", str(camera), "--loop", "--fps", f"{door_fps:g}", "--event-log", str(events)]
            door_args += ["--relay", "log", "--stale", "5"]
            with ServerProcess(model, threads, door_args) as server:
                _warm(server.url, body)
                start = time.time()
                time.sleep(seconds)
                idle = door_window(events, start, time.time())
                out(_door_line(f"alone for {seconds:g} s (no HTTP load)", idle))
                results["door_idle"] = idle
                for n in clients:
                    start = time.time()
                    load = load_test(server.url, n, seconds, body, out, server.proc.pid)
                    load["door"] = door_window(events, start, time.time())
                    out(_door_line(f"under {n} clients", load["door"]))
                    results["door"].append(load)
            _memory_verdict("door run --serve", results["door"], out)
            worst = max((r["door"]["p99_ms"] for r in results["door"]), default=float("nan"))
            out(
                f"door decision p99: alone {idle['p99_ms']:.2f} ms, worst under load {worst:.2f} ms "
                f"(x{worst / idle['p99_ms']:.1f}); frames/s alone {idle['fps']:.1f}, under load "
                f"{min((r['door']['fps'] for r in results['door']), default=float('nan')):.1f} at the least"
            )
    out(f"machine: {machine_load()}")
    return results


def _warm(url: str, body: bytes) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=30) as c:  # first requests allocate: not part of the figures
        for _ in range(20):
            c.post("/predict", content=body)


def _memory_verdict(server: str, runs: list[dict], out: Callable[[str], None]) -> None:
    rss = [(r["rss_before_mb"], r["rss_after_mb"]) for r in runs if r["rss_before_mb"] is not None]
    if not rss:
        return
    first, last = rss[0][0], rss[-1][1]
    growth = last - first
    verdict = "ok" if growth <= RSS_GROWTH_BOUND_MB else "GROWING"
    out(
        f"memory  {server}: RSS {first:.1f} MB before the first run, {last:.1f} MB after the last "
        f"({growth:+.1f} MB; bound {RSS_GROWTH_BOUND_MB:g} MB): {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    """Load a ``toolkit door serve`` process (then ``door run --serve`` with ``--with-door``); print the figures."""
    parser = cli.parser("door_load", __doc__)
    parser.add_argument("--model", type=Path, required=True, help="export folder, or FOLDER/FILE.onnx")
    parser.add_argument("--threads", type=cli.positive(int), default=1, help="onnxruntime threads (default 1)")
    parser.add_argument("--clients", type=cli.csv_ints, default=(8, 32, 64),
                        help="concurrent clients, one load test per count (default 8,32,64)")
    parser.add_argument("--seconds", type=cli.positive(float), default=60.0, help="length of each load test "
                        "(default 60)")
    parser.add_argument("--with-door", action="store_true", help="load again with the door loop in the server")
    parser.add_argument("--door-fps", type=cli.positive(float), default=10.0,
                        help="the door loop's frame rate under load (default 10)")
    ns = parser.parse_args(argv)
    load_manifest(split_model(ns.model)[0])  # a clear error for a wrong --model before a server starts
    size = (480, 640)  # a camera frame (h, w), as toolkit door bench decodes
    frames = [camera_like_frame(size, seed) for seed in range(8)]
    run_load(ns.model, ns.threads, ns.clients, ns.seconds, sample_jpeg(size), frames, ns.with_door, ns.door_fps,
             out=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    cli.run(main)
