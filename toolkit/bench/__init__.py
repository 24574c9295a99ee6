"""Inference benchmarks behind ``toolkit benchmark``."""

from toolkit.bench.config import BenchmarkConfig

__all__ = ["BenchmarkConfig", "benchmark"]


def __getattr__(name: str):
    # benchmark() pulls numpy and the export side; the CLI needs only the config to build its options
    if name == "benchmark":
        from toolkit.bench.inference import benchmark

        return benchmark
    raise AttributeError(name)
