"""The bounded HTTP load test behind ``toolkit door bench --clients 8,32,64 [--with-door]``.

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
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError

RSS_GROWTH_BOUND_MB = 32.0  # more than this over all runs of a bench is reported as growth


def percentiles(ms: list[float]) -> tuple[float, float]:
    """p50 and p99 of a list of milliseconds (NaN for an empty list)."""
    if not ms:
        return float("nan"), float("nan")
    a = np.asarray(ms, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


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


class ServerProcess:
    """``toolkit door serve`` (or ``door run --serve`` with ``door_args``) in a subprocess on a free loopback port."""

    def __init__(self, model: Path, threads: int = 1, door_args: list[str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        folder, file = (Path(model).parent, Path(model).name) if Path(model).suffix == ".onnx" else (model, None)
        verb = ["run", *door_args, "--serve"] if door_args is not None else ["serve"]
        self.cmd = [sys.executable, "-m", "toolkit", "door", *verb, "--model", str(folder)]
        self.cmd += ["--file", file] if file else []
        self.cmd += ["--port", str(self.port), "--threads", str(threads), "--quiet"]

    def __enter__(self) -> ServerProcess:
        import httpx

        env = {**os.environ, "TOOLKIT_DOOR_TOKEN": ""}  # the benchmark never needs to unlock
        # stderr to a file, not a pipe nobody reads: a full pipe would stall the server mid-benchmark.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise ToolkitError(f"'{' '.join(self.cmd[3:5])}' exited: {self.log.read().decode()[-500:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise ToolkitError(f"'{' '.join(self.cmd[3:5])}' did not become ready within 60 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


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
