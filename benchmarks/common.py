"""What the reliability checks share: running ``toolkit`` in a child process, tiny settings, folder checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]  # holds benchmarks/: children started elsewhere must find it

# Small enough for CI: HappyModel at 32x32 on 64 synthetic faces trains an epoch in well under a second.
DATA = "synthetic:happy?n=64"
IMAGE_SIZE = 32
BATCH = 16


def toolkit_cmd(*args: str) -> list[str]:
    """The command line that runs ``toolkit ARGS`` with this interpreter."""
    return [sys.executable, "-m", "toolkit", *args]


def killer_cmd(at: int, modules: str, *args: str, count_file: Path | None = None) -> list[str]:
    """``toolkit ARGS`` under :mod:`benchmarks.killer` (SIGKILL at line event ``at``)."""
    extra = ["--count-file", str(count_file)] if count_file else []
    return [sys.executable, "-m", "benchmarks.killer", "--at", str(at), "--modules", modules, *extra,
            "--", *args]


def child_env(**extra: str) -> dict:
    """This process's environment for a child, unbuffered, quiet TensorFlow, able to import ``benchmarks``."""
    path = os.pathsep.join(p for p in (str(CHECKOUT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path, **extra}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -9

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr


def run(cmd: list[str], *, env: dict | None = None, timeout: float = 900, cwd: Path | None = None,
        preexec_fn=None) -> Result:
    """Run a child to the end (or to its death) and capture both streams."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env or child_env(), timeout=timeout, cwd=cwd,
                       preexec_fn=preexec_fn, errors="replace")
    return Result(p.returncode, p.stdout, p.stderr)


def train_args(out: Path, *, epochs: int, seed: int = 0, resume: bool = False, data: str = DATA) -> list[str]:
    args = ["train", "happy", "--data", data, "--image-size", str(IMAGE_SIZE), "--epochs", str(epochs),
            "--batch-size", str(BATCH), "--patience", "0", "--seed", str(seed), "--out", str(out)]
    return args + (["--resume"] if resume else [])


def export_problems(folder: Path) -> list[str]:
    """What is wrong with an export folder: manifest unreadable, a listed file missing or not matching its hash."""
    from toolkit.errors import ToolkitError
    from toolkit.inference.manifest import load_manifest, sha256_file

    try:
        manifest = load_manifest(folder)
    except ToolkitError as exc:
        return [str(exc)]
    problems = []
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: listed in the manifest but missing")
        elif sha256_file(path) != entry.sha256:
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems


def leftovers(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    """Names in ``folder`` matching any glob pattern (temporary files a kill left behind)."""
    if not folder.is_dir():
        return []
    return sorted({p.name for pattern in patterns for p in folder.glob(pattern)})


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
