"""Training images/s of one process against N multiworker processes on this machine.

    python -m benchmarks.scaling [MODEL] [--data SPEC] [--processes N] [--epochs N] [--batch-size N] [--image-size N]

Every side trains the same model on the same images with the same global batch, each in its own
``toolkit train`` process(es) exactly as a user would start them, the workers on 127.0.0.1. Throughput
is the training split's size over the chief's epoch time (history.csv), the median of the epochs after
the first (which traces the graphs). On one machine this checks the plumbing, not the speed-up: the
workers share its cores and exchange gradients over local gRPC.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import cli
from toolkit.cpu import cpu_count
from toolkit.errors import ToolkitError


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_h5(spec: str, size: int, path: Path) -> None:
    """The data drawn or decoded once, as one course-format file every process loads in a moment."""
    import h5py

    from toolkit.data import load_data

    ds = load_data(spec, size)
    x, y = ds.all().numpy()
    with h5py.File(path, "w") as f:
        f["train_set_x"], f["train_set_y"] = x, y
        f["list_classes"] = [label.encode() for label in ds.labels]


def _run(processes: int, args: list[str], folder: Path, threads: int, timeout: float) -> dict:
    """Train with ``processes`` processes (1: --strategy one); the chief's figures and the wall time."""
    env = {**os.environ, "TOOLKIT_WORKER_STATE": str(folder / "worker-state"), "TF_CONFIG": "",
           "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}
    out = folder / f"run-{processes}"
    if processes == 1:
        commands = [["--out", str(out), "--strategy", "one"]]
    else:
        cluster = ",".join(f"127.0.0.1:{p}" for p in _free_ports(processes))
        commands = [["--out", str(out if i == 0 else folder / f"run-{processes}-w{i}"), "--strategy", "multiworker",
                     "--workers", cluster, "--worker-index", str(i)] for i in range(processes)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "toolkit", "train", *args, *c], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()  # SIGKILL: TensorFlow catches SIGTERM
            raise ToolkitError(f"scaling: {processes} process(es) did not finish within {timeout:g} s") from None
        if proc.returncode:
            errors.append(err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}")
    wall = time.perf_counter() - t0
    if errors:
        raise ToolkitError(f"scaling: {processes} process(es) failed: {errors[0]}")
    with open(out / "history.csv", newline="") as f:
        times = [float(row["epoch_time"]) for row in csv.DictReader(f)]
    config = json.loads((out / "config.json").read_text())
    n = config["sizes"]["train"]
    return {"processes": processes, "threads_per_worker": threads, "epoch_s": times, "train_images": n,
            "images_per_s": n / statistics.median(times[1:] or times), "wall_s": wall,
            "accuracy": json.loads((out / "metrics.json").read_text())["accuracy"],
            "replicas": config.get("distribute", {}).get("replicas", 1)}


def benchmark_scaling(model: str = "happy", data: str = "synthetic:happy?n=1000", *, processes: int = 2,
                      epochs: int = 4, batch_size: int = 64, image_size: int = 64, timeout: float = 900) -> dict:
    """Train once with one process, once with ``processes`` multiworker processes on 127.0.0.1; images/s of each."""
    if processes < 2:
        raise ToolkitError(f"--processes must be at least 2 to compare with one process, got {processes}")
    if epochs < 2:
        raise ToolkitError(f"--epochs must be at least 2 (the first traces graphs and is not timed), got {epochs}")
    cores = cpu_count()
    with tempfile.TemporaryDirectory(prefix="toolkit-scaling-") as tmp:
        folder = Path(tmp)
        h5 = folder / "train_data.h5"
        _write_h5(data, image_size, h5)
        args = [model, "--data", str(h5), "--epochs", str(epochs), "--batch-size", str(batch_size),
                "--image-size", str(image_size), "--patience", "0"]
        one = _run(1, args, folder, cores, timeout)
        many = _run(processes, args, folder, max(1, cores // processes), timeout)
    return {"model": model, "data": data, "image_size": image_size, "epochs": epochs, "global_batch": batch_size,
            "cores": cores, "runs": [one, many], "ratio": many["images_per_s"] / one["images_per_s"]}


def format_scaling(r: dict) -> str:
    lines = [f"{r['model']} at {r['image_size']}x{r['image_size']} on {r['data']}: "
             f"{r['runs'][0]['train_images']} training images, global batch {r['global_batch']}, {r['epochs']} epochs; "
             f"{r['cores']} cores on this machine, workers on 127.0.0.1",
             f"{'processes':>9} {'threads each':>12} {'images/s':>9} {'epoch s (median)':>17} {'test acc':>9} "
             f"{'wall s':>7}"]
    for run in r["runs"]:
        lines.append(f"{run['processes']:>9} {run['threads_per_worker']:>12} {run['images_per_s']:>9.0f} "
                     f"{statistics.median(run['epoch_s'][1:] or run['epoch_s']):>17.2f} {run['accuracy']:>9.3f} "
                     f"{run['wall_s']:>7.0f}")
    lines.append(f"images/s ratio {r['runs'][1]['processes']} processes / 1: {r['ratio']:.2f} (one machine: the "
                 "processes share its cores and all-reduce gradients over local gRPC every step; this checks the "
                 "plumbing, not the speed-up of separate machines)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, train both ways, print the table."""
    parser = cli.parser("scaling", __doc__)
    parser.add_argument("model", nargs="?", default="happy", help="registered model name (default happy)")
    parser.add_argument("--data", default="synthetic:happy?n=1000", help="data spec (decoded once, shared by all)")
    parser.add_argument("--processes", type=int, default=2,
                        help="multiworker processes on 127.0.0.1 to compare with one (default 2)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per side; the first traces graphs and is "
                        "not timed (default 4)")
    parser.add_argument("--batch-size", type=cli.positive(int), default=64, help="global batch, the same on both "
                        "sides (default 64)")
    parser.add_argument("--image-size", type=cli.positive(int), default=64, help="default 64")
    ns = parser.parse_args(argv)
    print(format_scaling(benchmark_scaling(ns.model, ns.data, processes=ns.processes, epochs=ns.epochs,
                                           batch_size=ns.batch_size, image_size=ns.image_size)))
    return 0


if __name__ == "__main__":
    cli.run(main)
