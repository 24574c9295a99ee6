"""Latency percentiles and throughput of a callable, after warm-up."""

from __future__ import annotations

import time

import numpy as np


def time_latency(call, x: np.ndarray, repeats: int, min_seconds: float, warmup: int = 5) -> dict:
    """Batch-1 latency in ms: p50/p90/p99 over at least ``repeats`` calls and ``min_seconds``."""
    for i in range(warmup):
        call(x[i % len(x)][None])
    times = []
    start = time.perf_counter()
    i = 0
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        xb = x[i % len(x)][None]
        t0 = time.perf_counter()
        call(xb)
        times.append(time.perf_counter() - t0)
        i += 1
        if len(times) >= 20 * repeats:
            break
    ms = np.array(times) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "calls": len(ms),
    }


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
