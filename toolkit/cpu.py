"""The CPU features int8 inference speed depends on (x86 VNNI / AMX, ARM dot-product / i8mm)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# flag in /proc/cpuinfo -> what it buys an int8 model
INT8_FLAGS = {
    "avx2": "AVX2 (int8 via 16-bit madd)",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI (int8 dot product)",
    "avx_vnni": "AVX-VNNI (int8 dot product, 256-bit)",
    "amx_int8": "AMX-INT8 (tile matrix multiply)",
    "asimddp": "ARM dot-product (SDOT/UDOT)",
    "i8mm": "ARM int8 matrix multiply (SMMLA)",
    "asimdhp": "ARM half-precision arithmetic",
}


def cpu_count() -> int:
    """Cores this process may run on (the container's share, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_features() -> dict:
    """Model name, usable cores and the int8-relevant instruction-set flags of this machine."""
    flags: set[str] = set()
    name = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("flags", "features"):
                flags.update(value.split())
            elif key in ("model name", "hardware", "cpu model") and value.strip():
                name = value.strip()
    present = [flag for flag in INT8_FLAGS if flag in flags]
    return {
        "cpu": name,
        "machine": platform.machine(),
        "cores": cpu_count(),
        "int8_features": present,
        "described": [INT8_FLAGS[f] for f in present],
    }


def describe(features: dict) -> str:
    """One line for the console: the CPU and which int8 instructions it has."""
    have = ", ".join(features["described"]) or "none of AVX-512 VNNI / AVX-VNNI / AMX / ARM dot-product"
    return f"CPU: {features['cpu']} ({features['machine']}, {features['cores']} cores); int8 features: {have}"
