"""The door's page under load, and a soak of its snapshot folder and event log (a benchmark, not a test).

    python -m benchmarks.door_page --model exported/happy [--clients 8,32,64] [--seconds 30] [--door-fps 10]
    python -m benchmarks.door_page --model exported/happy --soak 600 [--snapshot-cap-mb 5]
        [--event-log-max-bytes 100000 --event-log-backups 2] [--door-arg=...]

Load: a real ``toolkit door run --serve`` process on a looping folder camera; per client count N, the door
alone for a phase, then N concurrent clients doing what open pages do, back to back: ``GET /``,
``/door/state``, ``/door/timeline``, ``/door/live.jpg`` and ``/door/snapshots`` (the last two with the
token); with ``--pace page``, at the page's own pace instead (its timers, ~2.6 requests/s a page).
Where the machine has two cores or more, the door runs on the first half of them and this process,
the load generator, on the others (a real page's clients are phones, not processes on the door). Printed:
requests, status counts (5xx must be 0), latency, and the door's frame->decision p50/p99 with the pages
beside its figure alone just before (the issue's bound for p99: within 10 %), then a table of both.

Soak: the door at full frame rate (``--fps 0``) with a snapshot every frame it may keep, for S seconds, with
small caps so both rotate many times; every ``--sample-seconds`` the snapshot folder and the event log (all
its rotated files) are measured against their caps (``--snapshot-cap-mb``; the event log's is
``(backups + 1) x max bytes``); exit 1 when either went over.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from benchmarks import cli
from benchmarks.door_load import _door_line, machine_load
from toolkit.inference.manifest import load_manifest
from toolkit.runtime.bench import ServerProcess, camera_like_frame, percentiles, split_model

TOKEN = "benchmark-token"
P99_BOUND = 1.10  # the door's decision p99 with pages open, at most this times its figure alone


# What the door's page itself asks, and how often (its timers in toolkit/runtime/static): (path, token, every s)
PAGE_SCHEDULE = [("/door/state", False, 1), ("/door/timeline", False, 2), ("/door/live.jpg", True, 1),
                 ("/door/snapshots", True, 15)]  # fmt: skip
# The load test: the page itself, then each of those in turn, back to back
PAGE_REQUESTS = [("/", False)] + [(path, needs_token) for path, needs_token, _ in PAGE_SCHEDULE]
PACES = ("back-to-back", "page")


def page_load(url: str, clients: int, seconds: float, out: Callable[[str], None] | None = print,
              pace: str = "back-to-back") -> dict:  # fmt: skip
    """``clients`` concurrent pages for ``seconds``: polling every endpoint back to back (the load test), or
    at the page's own pace (``/`` once, then its timers: state and live view every second, the timeline every
    2 s, the snapshot list every 15 s), each page starting at a random moment of the first second."""
    import random

    import httpx

    rng = random.Random(0)
    statuses: Counter = Counter()
    errors: Counter = Counter()
    latencies: list[float] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def client_loop(client: httpx.AsyncClient, deadline: float) -> None:
        i = 0
        while time.monotonic() < deadline:
            await get(client, *PAGE_REQUESTS[i % len(PAGE_REQUESTS)])
            i += 1

    async def get(client: httpx.AsyncClient, path: str, needs_token: bool) -> None:
        start = time.perf_counter()
        try:
            r = await client.get(path, headers=auth if needs_token else None)
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] += 1
            return
        statuses[r.status_code] += 1
        latencies.append((time.perf_counter() - start) * 1000.0)

    async def paced_loop(client: httpx.AsyncClient, deadline: float, offset: float) -> None:
        await asyncio.sleep(offset)
        await get(client, "/", False)
        began, tick = time.monotonic(), 0
        while time.monotonic() < deadline:
            for path, needs_token, every in PAGE_SCHEDULE:
                if tick % every == 0:
                    await get(client, path, needs_token)
            tick += 1
            await asyncio.sleep(max(0.0, began + tick - time.monotonic()))

    async def page(deadline: float) -> None:
        # A client (and connection) per page, as each phone has its own: one shared pool of 64 connections
        # costs httpx far more CPU per request than the door spends answering (measured: the generator's
        # core saturated at ~130 requests/s while the door used 0.17 of its core).
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            if pace == "page":
                await paced_loop(client, deadline, rng.random())
            else:
                await client_loop(client, deadline)

    async def run() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(page(deadline) for _ in range(clients)))

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    p50, p99 = percentiles(latencies)
    if out is not None:
        out(f"page  {clients} clients x {seconds:g} s: {total} requests ({total / elapsed:.1f}/s), "
            f"status {dict(sorted(statuses.items()))}, 5xx {server_errors}, transport errors "
            f"{sum(errors.values())}, p50 {p50:.1f} ms p99 {p99:.1f} ms")  # fmt: skip
    return {"clients": clients, "requests": total, "5xx": server_errors, "errors": sum(errors.values()),
            "p50_ms": p50, "p99_ms": p99, "statuses": statuses, "latencies": latencies, "seconds": elapsed}  # fmt: skip


def door_window(event_log: Path, start: float, end: float) -> dict:
    """The door's judged frames between two wall-clock times (with a face or not: the detector's time counts)."""
    return door_windows(event_log, [(start, end)])


def door_windows(event_log: Path, windows: list[tuple[float, float]]) -> dict:
    """The door's judged frames within any of several wall-clock windows, pooled."""
    import json

    ms = [e["latency_ms"] for e in map(json.loads, event_log.read_text().splitlines())
          if e["latency_ms"] > 0 and any(start <= e["time"] <= end for start, end in windows)]  # fmt: skip
    p50, p99 = percentiles(ms)
    span = sum(end - start for start, end in windows)
    return {"frames": len(ms), "fps": len(ms) / max(span, 1e-9), "p50_ms": p50, "p99_ms": p99}


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


def split_cores() -> tuple[set[int], set[int]] | None:
    """(the door's cores, the page clients' cores), or None on one core or where affinity cannot be set.

    On a real door the page's clients are phones, not processes on the Pi: the load generator must not take
    the door's CPU, or the benchmark measures the client's cost instead of the server's.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    half = max(1, len(cores) // 2)
    return set(cores[:half]), set(cores[half:])


@contextmanager
def pinned_door(server: ServerProcess, cores: tuple[set[int], set[int]] | None, out: Callable[[str], None]):
    """Start ``server`` on the door's cores (the child inherits them at fork), then move this process, the
    load generator, to the other cores; both printed as read back from the kernel, every thread of the door."""
    mine = os.sched_getaffinity(0) if cores else None
    if cores:
        os.sched_setaffinity(0, cores[0])
    try:
        with server:
            if cores:
                os.sched_setaffinity(0, cores[1])
                door = {c for tid in os.listdir(f"/proc/{server.proc.pid}/task")
                        for c in os.sched_getaffinity(int(tid))}  # fmt: skip
                threads = len(os.listdir(f"/proc/{server.proc.pid}/task"))
                out(f"affinity: door pid {server.proc.pid} ({threads} threads) on cpus {sorted(door)}; "
                    f"load generator pid {os.getpid()} on cpus {sorted(os.sched_getaffinity(0))}")  # fmt: skip
            else:
                out("affinity: not set (one core, or no sched_setaffinity): the clients share the door's CPU")
            yield server
    finally:
        if mine:
            os.sched_setaffinity(0, mine)


def run_page_load(model: Path, threads: int, clients: tuple[int, ...], seconds: float, fps: float,
                  camera: Path | None, extra: list[str], out: Callable[[str], None] = print,
                  rounds: int = 3, pace: str = "back-to-back") -> dict:  # fmt: skip
    """Per client count, the door alone and with that many pages open, in ``rounds`` alternating blocks of
    ``seconds / rounds`` each, in one door process: its decision p50/p99 side by side, pooled per side, so
    both halves of a row see the same machine (other jobs on a shared machine come and go)."""
    out(f"machine: {machine_load()}; pages polling {pace}")
    results: dict = {"pages": []}
    with tempfile.TemporaryDirectory(prefix="toolkit-bench-page-") as name:
        # never rotated here: the decision latencies are read back from the one file
        server, events, _ = _door(model, threads, Path(name), camera, fps, 1.0, 50.0,
                                  ["--event-log-max-bytes", "0", *extra])  # fmt: skip
        with pinned_door(server, split_cores(), out):
            time.sleep(2)  # the first frames allocate: not part of the figures
            for n in clients:
                quiet, loaded, blocks = [], [], []
                for _ in range(rounds):  # alone and loaded interleaved: both halves see the same machine
                    start = time.time()
                    time.sleep(seconds / rounds)
                    quiet.append((start, time.time()))
                    start = time.time()
                    blocks.append(page_load(server.url, n, seconds / rounds, None, pace))
                    loaded.append((start, time.time()))
                load = _pooled(n, blocks)
                alone, load["door"] = door_windows(events, quiet), door_windows(events, loaded)
                out(f"page  {n} clients x {seconds:g} s: {load['requests']} requests "
                    f"({load['requests'] / load['seconds']:.1f}/s), status {dict(sorted(load['statuses'].items()))}, "
                    f"5xx {load['5xx']}, transport errors {load['errors']}, p50 {load['p50_ms']:.1f} ms "
                    f"p99 {load['p99_ms']:.1f} ms")  # fmt: skip
                out(_door_line(f"alone, {rounds} x {seconds / rounds:g} s between the loaded ones", alone))
                ratio = load["door"]["p99_ms"] / alone["p99_ms"]
                verdict = "ok" if ratio <= P99_BOUND else f"OVER the {P99_BOUND:.2f}x bound"
                out(_door_line(f"with {n} pages", load["door"]) + f" (x{ratio:.2f} of alone: {verdict})")
                load["alone"], load["ratio"] = alone, ratio
                results["pages"].append(load)
    out(f"machine: {machine_load()}")
    out("| open pages | page requests/s | 5xx | page p50 / p99 | door decisions/s alone / with | "
        "door decision p50 alone / with | door decision p99 alone / with | p99 ratio |")
    out("|---|---|---|---|---|---|---|---|")
    for r in results["pages"]:
        a, d = r["alone"], r["door"]
        out(f"| {r['clients']} | {r['requests'] / r['seconds']:.0f} | {r['5xx']} | {r['p50_ms']:.0f} / "
            f"{r['p99_ms']:.0f} ms | {a['fps']:.1f} / {d['fps']:.1f} | {a['p50_ms']:.1f} / {d['p50_ms']:.1f} ms | "
            f"{a['p99_ms']:.1f} / {d['p99_ms']:.1f} ms | x{r['ratio']:.2f} |")  # fmt: skip
    return results


def _pooled(clients: int, blocks: list[dict]) -> dict:
    statuses = sum((b["statuses"] for b in blocks), Counter())
    p50, p99 = percentiles([ms for b in blocks for ms in b["latencies"]])
    return {"clients": clients, "requests": sum(b["requests"] for b in blocks), "statuses": statuses,
            "5xx": sum(b["5xx"] for b in blocks), "errors": sum(b["errors"] for b in blocks),
            "seconds": sum(b["seconds"] for b in blocks), "p50_ms": p50, "p99_ms": p99}  # fmt: skip


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _log_bytes(events: Path) -> int:
    return sum(p.stat().st_size for p in events.parent.glob(events.name + "*") if p.is_file())


def _first_line(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.readline().decode(errors="replace") or None
    except OSError:  # rotated away between the listing and the open
        return None


def run_soak(model: Path, threads: int, seconds: float, cap_mb: float, log_max_bytes: int, log_backups: int,
             every: float, camera: Path | None, extra: list[str],
             out: Callable[[str], None] = print) -> dict:  # fmt: skip
    """The door at full frame rate for ``seconds``; the snapshot folder and the event log (with its rotated
    files) measured every ``every`` seconds against their caps, and their rotations counted."""
    out(f"machine: {machine_load()}")
    log_cap = (log_backups + 1) * log_max_bytes / 1e6  # the event log's bound: every file at most max bytes
    worst = {"snapshots_mb": 0.0, "event_log_mb": 0.0}
    log_files: set[str] = set()  # first lines of the live event log seen: one per file the door started
    seen_snaps: set[str] = set()
    samples = 0
    with tempfile.TemporaryDirectory(prefix="toolkit-bench-soak-") as name:
        rotation = ["--event-log-max-bytes", str(log_max_bytes), "--event-log-backups", str(log_backups)]
        server, events, snapshots = _door(model, threads, Path(name), camera, 0.0, 0.01, cap_mb, [*rotation, *extra])
        with server:
            start = last_print = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                time.sleep(min(every, max(0.0, seconds - elapsed)))
                snaps, log = _folder_bytes(snapshots) / 1e6, _log_bytes(events) / 1e6
                samples += 1
                worst["snapshots_mb"] = max(worst["snapshots_mb"], snaps)
                worst["event_log_mb"] = max(worst["event_log_mb"], log)
                if (first := _first_line(events)) is not None:
                    log_files.add(first)
                jpgs = sorted(snapshots.glob("*.jpg"))
                seen_snaps.update(p.name for p in jpgs)
                if time.monotonic() - last_print >= 30 or time.monotonic() - start >= seconds:
                    last_print = time.monotonic()
                    out(f"soak  {time.monotonic() - start:5.0f} s: snapshots {snaps:.2f} MB ({len(jpgs)} kept, "
                        f"{len(seen_snaps) - len(jpgs)} dropped so far; cap {cap_mb:g} MB), event log {log:.3f} MB "
                        f"in {len(list(events.parent.glob(events.name + '*')))} files (cap {log_cap:g} MB, "
                        f"{len(log_files) - 1} rotations seen)")  # fmt: skip
            frames = len(events.read_text().splitlines())
    snaps_ok, log_ok = worst["snapshots_mb"] <= cap_mb, worst["event_log_mb"] <= log_cap
    out(f"soak  {seconds:g} s, {samples} samples every {every:g} s; last event-log file {frames} lines")
    out(f"soak  snapshots at most {worst['snapshots_mb']:.3f} MB (cap {cap_mb:g} MB, {len(seen_snaps)} kept in "
        f"turn): {'ok' if snaps_ok else 'OVER'}; event log at most {worst['event_log_mb']:.3f} MB (cap {log_cap:g} "
        f"MB = {log_backups + 1} x {log_max_bytes} bytes, >= {len(log_files) - 1} rotations): "
        f"{'ok' if log_ok else 'OVER'}")  # fmt: skip
    return {**worst, "rotations": len(log_files) - 1, "ok": snaps_ok and log_ok}


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
    parser.add_argument("--event-log-max-bytes", type=cli.positive(int), default=100_000,
                        help="soak: the door rotates its event log at this size (default 100000)")
    parser.add_argument("--event-log-backups", type=int, default=2, help="soak: rotated logs kept (default 2)")
    parser.add_argument("--sample-seconds", type=cli.positive(float), default=2.0,
                        help="soak: seconds between two measurements of the folders (default 2)")
    parser.add_argument("--door-arg", action="append", default=[], help="extra 'toolkit door run' argument")
    parser.add_argument("--pace", choices=PACES, default="back-to-back", help="pages polling back to back (the "
                        "load test, default) or at the page's own pace (its timers: ~2.6 requests/s a page)")
    ns = parser.parse_args(argv)
    load_manifest(split_model(ns.model)[0])  # a clear error for a wrong --model before a server starts
    out = lambda line: print(line, flush=True)  # noqa: E731
    if ns.soak:
        ok = run_soak(ns.model, ns.threads, ns.soak, ns.snapshot_cap_mb, ns.event_log_max_bytes,
                      ns.event_log_backups, ns.sample_seconds, ns.camera, ns.door_arg, out)["ok"]
        return 0 if ok else 1
    else:
        run_page_load(ns.model, ns.threads, ns.clients, ns.seconds, ns.door_fps, ns.camera, ns.door_arg, out,
                      pace=ns.pace)
    return 0


if __name__ == "__main__":
    cli.run(main)
