"""Run a ``toolkit`` command and SIGKILL it at the N-th executed line of chosen toolkit modules.

``python -m benchmarks.killer --at N --modules toolkit.export,toolkit.train.features -- export ...``

Counting lines instead of seconds makes a kill point exact and repeatable: point N of a command is the
same statement on every run, so a failure found at one point can be replayed. ``--at 0`` runs the
command to the end and writes the number of line events it saw to ``--count-file``, which gives the
range to draw kill points from. Only Python lines are counted; writes that TensorFlow does on its own
threads are reached by the time-based kills of :mod:`benchmarks.interrupt`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from benchmarks import cli


def _files(modules: list[str]) -> tuple[str, ...]:
    """Path prefixes of the source files of ``modules`` (a package means every file under it)."""
    import toolkit

    root = Path(toolkit.__file__).resolve().parents[1]  # where the toolkit that runs is, not this checkout
    out = []
    for name in modules:
        base = root.joinpath(*name.split("."))
        out.append(str(base) + os.sep if base.is_dir() else str(base) + ".py")
    return tuple(out)


def install(at: int, modules: list[str]) -> list[int]:
    """Trace line events in ``modules``' files; at event ``at`` (if > 0) the process kills itself."""
    prefixes = _files(modules)
    seen = [0]
    lock = threading.Lock()

    def local(frame, event, arg):
        if event == "line":
            with lock:
                seen[0] += 1
                hit = seen[0] == at
            if hit:
                os.kill(os.getpid(), signal.SIGKILL)
        return local

    def global_trace(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(prefixes) else None

    sys.settrace(global_trace)
    threading.settrace(global_trace)
    return seen


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, arm the kill, run the toolkit command; its exit status (if it lives)."""
    parser = cli.parser("killer", __doc__)
    parser.add_argument("--at", type=int, required=True, help="kill at this line event (0: never)")
    parser.add_argument("--modules", required=True, help="comma list of toolkit modules or packages to count in")
    parser.add_argument("--count-file", help="with --at 0: write the number of line events here")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the toolkit command's arguments")
    ns = parser.parse_args(argv)
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    seen = install(ns.at, [m for m in ns.modules.split(",") if m])
    from toolkit.cli import main as toolkit_main

    rc = toolkit_main(args)
    sys.settrace(None)
    threading.settrace(None)
    if ns.count_file:
        Path(ns.count_file).write_text(str(seen[0]))
    return rc


if __name__ == "__main__":
    cli.run(main)
