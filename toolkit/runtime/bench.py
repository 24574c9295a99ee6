"""``toolkit door bench``: the door's numbers, printed (benchmarks print, tests assert behaviour).

1. Frame → decision latency (decode/resize a camera-sized frame, run, k-of-n vote) per export folder.
2. ``POST /predict`` overhead over the bare Predictor, both on the same JPEG, against a real
   ``toolkit door serve`` subprocess on 127.0.0.1 (one process per side, like production).
3. A bounded load test: N concurrent clients for S seconds; counts 5xx and dropped requests.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.errors import ToolkitError
from toolkit.runtime.config import BenchConfig, PolicyConfig
from toolkit.runtime.policy import DoorPolicy
from toolkit.runtime.predictor import Predictor


def percentiles(ms: list[float]) -> tuple[float, float]:
    """p50 and p99 of a list of milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def split_model(path: Path) -> tuple[Path, str | None]:
    """``DIR`` → (DIR, None: the manifest's serve file); ``DIR/FILE.onnx`` → (DIR, FILE.onnx)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return path.parent, path.name
    return path, None


def run_bench(config: BenchConfig, out: Callable[[str], None] = print) -> dict:
    """Run the benchmarks in ``config`` and print one line per result; returns the numbers."""
    if not config.models:
        raise ToolkitError("--model: give at least one export folder to benchmark")
    results: dict = {"models": {}}
    frames = [camera_like_frame(config.frame_size, seed) for seed in range(8)]
    for model in config.models:
        folder, file = split_model(model)
        pred = Predictor(folder, file, threads=config.threads)
        policy = DoorPolicy(PolicyConfig(), pred.threshold if pred.threshold is not None else 0.5)
        for f in frames:  # warm-up: first runs allocate
            pred.predict(f)
        ms = []
        for i in range(config.n):
            start = time.perf_counter()
            policy.observe(pred.predict(frames[i % len(frames)]).probability)
            ms.append((time.perf_counter() - start) * 1000.0)
        p50, p99 = percentiles(ms)
        entry = pred.manifest.files[pred.file]
        (h, w), (fh, fw) = pred.size, config.frame_size
        out(
            f"frame->decision  {pred.name} ({pred.file}, {entry.quantization}, {h}x{w}, "
            f"threads={config.threads}): p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
            f"over {config.n} frames of {fw}x{fh}"
        )
        results["models"][str(model)] = {"p50_ms": p50, "p99_ms": p99}
    if config.http or config.clients:
        with ServerProcess(config.models[0], config.threads) as server:
            if config.http:
                results["http"] = _http_overhead(config, server.url, out, server.proc.pid)
            if config.clients:
                results["load"] = load_test(server.url, config.clients, config.seconds, _sample_jpeg(config), out)
    return results


def camera_like_frame(size: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth gradient with sensor-like noise: compresses like a camera frame, unlike pure noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, np.full((h, w), rng.integers(0, 256))], axis=-1)
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def _sample_jpeg(config: BenchConfig) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(camera_like_frame(config.frame_size, 99)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _http_overhead(config: BenchConfig, url: str, out: Callable[[str], None], server_pid: int) -> dict:
    import http.client
    import json
    from urllib.parse import urlsplit

    pred = Predictor(*split_model(config.models[0]), threads=config.threads)
    body = _sample_jpeg(config)
    where = urlsplit(url)
    # The stdlib client on one keep-alive connection: the least client-side cost in the round trip.
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    headers = {"Content-Type": "image/jpeg"}

    def post() -> dict:
        conn.request("POST", "/predict", body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise ToolkitError(f"/predict answered {r.status}: {data[:200]!r}")
        return json.loads(data)

    bare, http_ms, inside = [], [], []
    bare_cpu = 0.0
    try:
        for _ in range(10):  # warm-up both paths
            pred.predict(body)
            post()
        server_cpu = _cpu_seconds(server_pid)
        for _ in range(config.n):  # interleaved, so both see the same background noise
            start, cpu = time.perf_counter(), time.process_time()
            pred.predict(body)
            bare_cpu += time.process_time() - cpu
            bare.append((time.perf_counter() - start) * 1000.0)
            start = time.perf_counter()
            answer = post()
            http_ms.append((time.perf_counter() - start) * 1000.0)
            # Round trip minus the server's own Predictor time for this very request: pure HTTP cost,
            # free of any speed difference between the two processes.
            inside.append(http_ms[-1] - answer["latency_ms"])
        server_cpu_after = _cpu_seconds(server_pid)
    finally:
        conn.close()
    (b50, b99), (h50, h99) = percentiles(bare), percentiles(http_ms)
    s50 = percentiles(inside)[0]
    out(
        f"/predict overhead  bare Predictor p50 {b50:.2f} ms p99 {b99:.2f} ms | HTTP p50 {h50:.2f} ms "
        f"p99 {h99:.2f} ms | overhead p50 {h50 - b50:.2f} ms (round trip minus the server's own predict time: "
        f"p50 {s50:.2f} ms) ({config.n} requests, {len(body)} B JPEG, loopback)"
    )
    result = {"bare_p50_ms": b50, "http_p50_ms": h50, "overhead_p50_ms": h50 - b50, "in_server_overhead_p50_ms": s50}
    if server_cpu is not None and server_cpu_after is not None:
        # CPU time is immune to other processes competing for the cores, unlike wall-clock latency.
        per_request = (server_cpu_after - server_cpu) / config.n * 1000.0
        per_predict = bare_cpu / config.n * 1000.0
        out(
            f"/predict CPU  server {per_request:.2f} ms/request vs bare Predictor {per_predict:.2f} ms/call: "
            f"HTTP costs {per_request - per_predict:.2f} ms of CPU per request"
        )
        result["server_cpu_overhead_ms"] = per_request - per_predict
    return result


def load_test(url: str, clients: int, seconds: float, body: bytes, out: Callable[[str], None] = print) -> dict:
    """``clients`` threads POST /predict back to back for ``seconds``; every request is accounted for."""
    import httpx

    statuses: Counter = Counter()
    latencies: list[float] = []
    dropped = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    status = client.post("/predict", content=body).status_code
                except httpx.HTTPError:
                    with lock:
                        dropped[0] += 1
                    continue
                with lock:
                    statuses[status] += 1
                    latencies.append((time.perf_counter() - start) * 1000.0)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(statuses.values())
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    p50, p99 = percentiles(latencies) if latencies else (float("nan"), float("nan"))
    out(
        f"load  {clients} clients x {seconds:g} s: {total} requests ({total / seconds:.0f}/s), "
        f"status {dict(sorted(statuses.items()))}, 5xx {server_errors}, dropped {dropped[0]}, "
        f"p50 {p50:.2f} ms p99 {p99:.2f} ms"
    )
    return {"requests": total, "5xx": server_errors, "dropped": dropped[0], "p50_ms": p50, "p99_ms": p99}


class ServerProcess:
    """``toolkit door serve`` in a subprocess on a free loopback port, stopped on exit."""

    def __init__(self, model: Path, threads: int = 1) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        folder, file = split_model(model)
        self.cmd = [sys.executable, "-m", "toolkit", "door", "serve", "--model", str(folder)]
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
                raise ToolkitError(f"'toolkit door serve' exited: {self.log.read().decode()[-500:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise ToolkitError("'toolkit door serve' did not become ready within 60 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
