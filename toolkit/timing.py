"""Latency percentiles (of one callable, or of several timed in turns) and throughput, after warm-up."""

from __future__ import annotations

import time

import numpy as np


def time_latency(call, x: np.ndarray, repeats: int, min_seconds: float, warmup: int = 5) -> dict:
    """Batch-1 latency in ms: p50/p90/p99 over at least ``repeats`` calls and ``min_seconds``."""
    return time_in_turns([call], x, repeats, min_seconds, warmup, rounds=repeats)[0]


def time_in_turns(calls: list, x: np.ndarray, repeats: int, min_seconds: float, warmup: int = 5,
                  rounds: int = 10) -> list[dict]:
    """:func:`time_latency` of several callables timed in turns: ``repeats / rounds`` calls of each, again and
    again, until each has had at least ``repeats`` calls and ``min_seconds`` of calls (at most ``20 * repeats``),
    so that a ratio between two of them compares one moment of a shared machine, not two."""
    for call in calls:
        for i in range(warmup):
            call(x[i % len(x)][None])
    per_turn = max(1, -(-repeats // rounds))
    times: list[list[float]] = [[] for _ in calls]
    spent = [0.0] * len(calls)
    i = 0
    while min(map(len, times)) < repeats or min(spent) < min_seconds:
        for k, call in enumerate(calls):
            for _ in range(per_turn):
                xb = x[i % len(x)][None]
                t0 = time.perf_counter()
                call(xb)
                dt = time.perf_counter() - t0
                times[k].append(dt)
                spent[k] += dt
                i += 1
        if min(map(len, times)) >= 20 * repeats:
            break
    out = []
    for t in times:
        ms = np.array(t) * 1000
        out.append({"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                    "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)})
    return out


def time_batches(call, x: np.ndarray, batches, min_seconds: float) -> dict:
    """Images per second at each batch size (the batch is cycled from ``x``, repeated to fill it)."""
    out = {}
    for b in batches:
        idx = np.arange(b) % len(x)
        xb = x[idx]
        call(xb)  # warm-up: allocates the buffers for this batch size
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < min_seconds:
            call(xb)
            n += 1
        out[str(b)] = float(n * b / (time.perf_counter() - start))
    return out
