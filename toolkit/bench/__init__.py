"""Inference benchmarks behind ``toolkit benchmark``."""

from toolkit.bench.inference import BenchmarkConfig, benchmark

__all__ = ["BenchmarkConfig", "benchmark"]
