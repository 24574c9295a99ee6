"""``toolkit door bench``: the door's numbers, printed (benchmarks print, tests assert behaviour).

1. Frame → decision latency (decode/resize a camera-sized frame, run, k-of-n vote) per export folder.
2. ``POST /predict`` overhead over the bare Predictor, both on the same JPEG, against a real
   ``toolkit door serve`` subprocess on 127.0.0.1 (one process per side, like production).

Only the standard library talks HTTP here: this runs on a ``.[door]`` install. The load tests with many
clients are a developer benchmark of a checkout (``python -m benchmarks.door_load``).
"""

from __future__ import annotations

import http.client
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.errors import ToolkitError
from toolkit.inference.predictor import Predictor
from toolkit.runtime.camera import make_cropper
from toolkit.runtime.core.config import BenchConfig, PolicyConfig
from toolkit.runtime.core.policy import DoorPolicy


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
        # The export's own face detector runs first, as at the door. The frames hold no face, so this is
        # the detector's worst case (both passes) and the model then runs on the whole frame: an upper bound.
        crop = make_cropper(None, folder, config.threads)
        # A hand-sign or face-landmark export follows the hand (face) of its camera, as the door does
        # (DoorConfig.track); these frames hold none, so each costs the door's search: one palm pass, or the face
        # detector's plain pass and one second look (toolkit.inference.facetrack).
        stream = pred.stream() if crop is None else None

        for f in frames:  # warm-up: first runs allocate
            _decide(f, crop, pred, policy, stream)
        ms = []
        for i in range(config.frames):
            start = time.perf_counter()
            _decide(frames[i % len(frames)], crop, pred, policy, stream)
            ms.append((time.perf_counter() - start) * 1000.0)
        p50, p99 = percentiles(ms)
        entry = pred.manifest.files[pred.file]
        (h, w), (fh, fw) = pred.size, config.frame_size
        out(
            f"frame->decision  {pred.name} ({pred.file}, {entry.quantization}, {h}x{w}, "
            f"threads={config.threads}{', detector ' + crop.name if crop is not None else ''}"
            f"{', followed across frames' if stream is not None else ''}): "
            f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
            f"over {config.frames} frames of {fw}x{fh}; {', '.join(f'{k} {v}' for k, v in pred.runtimes().items())}"
        )
        results["models"][str(model)] = {"p50_ms": p50, "p99_ms": p99, "runtimes": pred.runtimes()}
    if config.http:
        with ServerProcess(config.models[0], config.threads) as server:
            results["http"] = _http_overhead(config, server.url, out, server.proc.pid)
    return results


def _decide(frame: np.ndarray, crop, pred: Predictor, policy: DoorPolicy, stream=None) -> None:
    face = crop(frame) if crop is not None else None
    if stream is not None:
        policy.observe(pred.predict(frame, stream=stream).probability)
        return
    policy.observe(pred.predict(frame if face is None else face).probability)


def camera_like_frame(size: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth gradient with sensor-like noise: compresses like a camera frame, unlike pure noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, np.full((h, w), rng.integers(0, 256))], axis=-1)
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def sample_jpeg(size: tuple[int, int]) -> bytes:
    """A camera-like frame of ``size`` (h, w) as a JPEG: what a client posts to ``/predict``."""
    buf = io.BytesIO()
    Image.fromarray(camera_like_frame(size, 99)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def percentiles(ms: list[float]) -> tuple[float, float]:
    """p50 and p99 of a list of milliseconds (NaN for an empty list)."""
    if not ms:
        return float("nan"), float("nan")
    a = np.asarray(ms, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


class ServerProcess:
    """``toolkit door serve`` (or ``door run --serve`` with ``door_args``) in a subprocess on a free loopback port."""

    def __init__(self, model: Path, threads: int = 1, door_args: list[str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        folder, file = split_model(model)
        verb = ["run", *door_args, "--serve"] if door_args is not None else ["serve"]
        self.cmd = [sys.executable, "-m", "toolkit", "door", *verb, "--model", str(folder)]
        self.cmd += ["--file", file] if file else []
        self.cmd += ["--port", str(self.port), "--threads", str(threads), "--quiet"]

    def __enter__(self) -> ServerProcess:
        env = {**os.environ, "TOOLKIT_DOOR_TOKEN": ""}  # the benchmark never needs to unlock
        # stderr to a file, not a pipe nobody reads: a full pipe would stall the server mid-benchmark.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise ToolkitError(f"'{' '.join(self.cmd[3:5])}' exited: {self.log.read().decode()[-500:]}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.__exit__()
        raise ToolkitError(f"'{' '.join(self.cmd[3:5])}' did not become ready within 60 s")

    def _ready(self) -> bool:
        # http.client straight to the port: urllib would send loopback through an http_proxy from the environment.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/v2/health/ready")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):  # not listening yet, or closed mid-answer
            return False
        finally:
            conn.close()

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _http_overhead(config: BenchConfig, url: str, out: Callable[[str], None], server_pid: int) -> dict:
    import json
    from urllib.parse import urlsplit

    pred = Predictor(*split_model(config.models[0]), threads=config.threads)
    body = sample_jpeg(config.frame_size)
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
        for _ in range(config.frames):  # interleaved, so both see the same background noise
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
        f"p50 {s50:.2f} ms) ({config.frames} requests, {len(body)} B JPEG, loopback)"
    )
    result = {"bare_p50_ms": b50, "http_p50_ms": h50, "overhead_p50_ms": h50 - b50, "in_server_overhead_p50_ms": s50}
    if server_cpu is not None and server_cpu_after is not None:
        # CPU time is immune to other processes competing for the cores, unlike wall-clock latency.
        per_request = (server_cpu_after - server_cpu) / config.frames * 1000.0
        per_predict = bare_cpu / config.frames * 1000.0
        out(
            f"/predict CPU  server {per_request:.2f} ms/request vs bare Predictor {per_predict:.2f} ms/call: "
            f"HTTP costs {per_request - per_predict:.2f} ms of CPU per request"
        )
        result["server_cpu_overhead_ms"] = per_request - per_predict
    return result
