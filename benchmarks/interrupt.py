"""SIGKILL ``toolkit train``, ``export``, ``pipeline run`` and feature caching, then check what is left.

Training is killed at random moments (a random epoch, a random fraction of it, or while the run is
finishing), because its checkpoints are written inside TensorFlow's C++ ops, which no Python line
counter sees. Export, pipelines and the feature cache are killed at random *line events* of
their own modules (:mod:`benchmarks.killer`), which reaches every write window exactly and
repeatably. After each kill: what a later run would trust must be complete, and the re-run finishes.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.common import (
    DATA,
    IMAGE_SIZE,
    child_env,
    export_problems,
    killer_cmd,
    leftovers,
    read_json,
    run,
    toolkit_cmd,
    train_args,
)
from toolkit.train.runs import read_history

EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+)")
SUMMARY_LINE = re.compile(r"^\d+/\d+ - ")  # Keras' end-of-epoch line with verbose=2
STAGING = (".*.partial-*", ".*.old-*")  # export's temporary folders next to the export folder


class _Child:
    """A running command whose merged output is read on a thread, each line with its arrival time."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=child_env(), errors="replace")
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: re.Pattern, count: int, timeout: float = 900) -> bool:
        """Block until ``count`` lines matched ``pattern``; False if the process ended first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for _, line in self.lines if pattern.search(line)) < count:
                if (not self._reader.is_alive() and self.proc.poll() is not None) or time.monotonic() > deadline:
                    return False
                self._cond.wait(0.05)
        return True

    def finish(self) -> int:
        rc = self.proc.wait()
        self._reader.join()
        return rc

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _timing(lines: list[tuple[float, str]], end: float) -> tuple[float, float]:
    """(median seconds between epoch starts, seconds from the last epoch's end to the process exit)."""
    starts = [t for t, line in lines if EPOCH_LINE.match(line)]
    ends = [t for t, line in lines if SUMMARY_LINE.match(line)]
    gaps = sorted(b - a for a, b in zip(starts, starts[1:])) or [1.0]
    return gaps[len(gaps) // 2], max(0.05, end - (ends[-1] if ends else end))


def durable_epochs(run_dir: Path) -> int:
    """Epochs whose resume state is complete: the last epoch ``backup/state.json`` records, plus one.

    A finished run has dropped its resume state: all its epochs are kept.
    """
    from toolkit.train.fit import is_finished
    from toolkit.train.resume import durable_epochs as recorded

    if is_finished(run_dir):
        return len(read_history(run_dir))
    return recorded(run_dir / "backup")


def _history(run_dir: Path) -> dict[int, tuple[str, str]]:
    """{epoch: (loss, val_loss)} as written, so equality is exact to the last digit."""
    import csv

    rows: dict[int, tuple[str, str]] = {}
    path = run_dir / "history.csv"
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("epoch", "").isdigit():
                    rows[int(row["epoch"])] = (row.get("loss", ""), row.get("val_loss", ""))
    return rows


def train_kills(work: Path, *, kills: int, epochs: int, rng: random.Random, log=print,
                phases: tuple[int, ...] = (), reference: Path | None = None) -> dict:
    """Train once uninterrupted, then ``kills`` times killed at a random moment and resumed.

    A moment is a random epoch (1..epochs; epochs + 1 means while the run finishes) plus a random
    fraction of it; ``phases`` fixes the epochs of the first kills (the fractions stay random).

    Returns:
        {"reference": {...}, "kills": [one dict per kill: where, epochs reported/durable, resumed from,
        epochs re-run, lost beyond the epoch in flight, resume exit code, same result as the reference]}.
    """
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if reference is not None:  # a finished run with the same settings (train_args); its epoch times set the pace
        ref_dir = reference
        times = sorted(float(row["epoch_time"]) for row in read_history(ref_dir) if "epoch_time" in row)
        epoch_s, finish_s = (times[len(times) // 2] if times else 0.5) + 0.2, 0.5
    else:
        ref_dir = work / "reference"
        shutil.rmtree(ref_dir, ignore_errors=True)
        ref = _Child(toolkit_cmd(*train_args(ref_dir, epochs=epochs)))
        if ref.finish() != 0:
            raise RuntimeError(f"reference training failed:\n{ref.text[-2000:]}")
        epoch_s, finish_s = _timing(ref.lines, time.monotonic())
    ref_metrics = read_json(ref_dir / "metrics.json")
    reference = {"seconds": time.monotonic() - t0, "epoch_s": epoch_s, "finish_s": finish_s,
                 "test_loss": ref_metrics["loss"], "test_accuracy": ref_metrics["accuracy"]}
    rows = []
    attempt = 0
    while len(rows) < kills and attempt < 4 * kills:
        attempt += 1
        out = work / f"kill-{len(rows) + 1}"
        shutil.rmtree(out, ignore_errors=True)
        phase = rng.randint(1, epochs + 1)  # epochs + 1: while the run finishes (model, plots, metrics)
        if len(rows) < len(phases):
            phase = phases[len(rows)]
        fraction = rng.random()
        child = _Child(toolkit_cmd(*train_args(out, epochs=epochs)))
        if phase <= epochs:
            reached = child.wait_for(EPOCH_LINE, phase)
            delay = fraction * epoch_s
            where = f"epoch {phase} + {fraction:.2f} of an epoch"
        else:
            reached = child.wait_for(SUMMARY_LINE, epochs)
            delay = fraction * finish_s
            where = f"finishing + {delay:.2f} s"
        if reached:
            time.sleep(delay)
        if not reached or child.proc.poll() is not None:
            child.finish()
            continue  # the run ended before the kill: draw another moment
        child.proc.send_signal(signal.SIGKILL)
        child.finish()
        reported = len(_history(out))
        durable = durable_epochs(out)
        resumed = run(toolkit_cmd(*train_args(out, epochs=epochs, resume=True)))
        starts = [int(m.group(1)) for m in map(EPOCH_LINE.match, resumed.stdout.splitlines()) if m]
        resumed_from = starts[0] - 1 if starts else epochs
        in_flight = 1 if reported > durable else 0
        metrics = read_json(out / "metrics.json") or {}
        row = {
            "where": where, "reported": reported, "durable": durable, "resumed_from": resumed_from,
            "rerun": reported - resumed_from, "lost_beyond_in_flight": reported - resumed_from - in_flight,
            "resume_rc": resumed.returncode,
            "resume_error": "" if resumed.returncode == 0 else (resumed.error_lines or [resumed.stderr[-300:]])[0],
            "same_history": _history(out) == _history(ref_dir),
            "same_metrics": metrics.get("loss") == ref_metrics["loss"]
            and metrics.get("accuracy") == ref_metrics["accuracy"],
            "test_loss_delta": abs(metrics.get("loss", float("nan")) - ref_metrics["loss"]),
            "leftovers": leftovers(out, ("backup", ".backup.removing-*", ".*.tmp.keras")),
        }
        log(f"train kill {len(rows) + 1}: at {where}; epochs reported {reported}, durable {durable}, "
            f"resumed from {resumed_from}, lost beyond the one in flight {row['lost_beyond_in_flight']}, "
            f"same result {row['same_history'] and row['same_metrics']}")
        rows.append(row)
    return {"reference": reference, "kills": rows, "attempts": attempt}


def _count_events(cmd_args: list[str], modules: str, work: Path, prepare=None) -> int:
    """Line events of ``modules`` in one complete run (the range kill points are drawn from)."""
    count_file = work / "events.txt"
    if prepare:
        prepare()
    result = run(killer_cmd(0, modules, *cmd_args, count_file=count_file))
    if result.returncode != 0:
        raise RuntimeError(f"reference run failed: {result.stderr[-2000:]}")
    return int(count_file.read_text())


def export_kills(work: Path, run_dir: Path, *, points: int, rng: random.Random, log=print) -> dict:
    """Kill ``toolkit export`` at random line events of toolkit.export; then check and re-run it.

    Every kill must leave the export folder absent or complete (manifest valid, hashes right), and the
    re-run (with --overwrite) must complete and leave no staging folder behind.
    """
    work.mkdir(parents=True, exist_ok=True)
    out = work / "exported" / "happy"
    args = ["export", str(run_dir), "--format", "onnx", "--quantize", "none", "--overwrite", "--out", str(out)]
    modules = "toolkit.export,toolkit.inference.manifest"
    total = _count_events(args, modules, work, prepare=lambda: shutil.rmtree(out.parent, ignore_errors=True))
    rows = []
    for i in range(points):
        shutil.rmtree(out.parent, ignore_errors=True)
        if i % 2:  # every other kill replaces an existing export: the old one must survive or be replaced whole
            run(toolkit_cmd(*args))
        at = rng.randint(1, total)
        killed = run(killer_cmd(at, modules, *args))
        state = "absent" if not out.exists() else ("complete" if not export_problems(out) else "PARTIAL")
        stale = leftovers(out.parent, STAGING)
        rerun = run(toolkit_cmd(*args))
        row = {"at": at, "of": total, "killed": killed.killed, "after_kill": state, "staging_left": stale,
               "rerun_rc": rerun.returncode, "rerun_ok": rerun.returncode == 0 and not export_problems(out),
               "staging_after_rerun": leftovers(out.parent, STAGING), "replacing": bool(i % 2)}
        log(f"export kill {i + 1}: line event {at}/{total}; folder {state}; re-run "
            f"{'ok' if row['rerun_ok'] else 'FAILED'}; staging left after re-run: {row['staging_after_rerun']}")
        rows.append(row)
    return {"events": total, "kills": rows}


PIPELINE = """\
[pipeline]
name = "tiny"
[data]
spec = "{data}"
image_size = {size}
[train]
model = "happy"
epochs = 2
batch_size = 16
patience = 0
[export]
formats = ["onnx"]
quantize = ["none"]
out = "{out}"
[benchmark]
threads = [1]
batch = [1]
repeats = 3
keras = false
[report]
enabled = false
"""


def pipeline_problems(work: Path, export_out: Path) -> list[str]:
    """Steps that state.json records as done but whose output is not complete."""
    from toolkit.train.fit import is_finished

    state_file = work / "tiny" / "state.json"
    if not state_file.exists():
        return []
    state = read_json(state_file)
    if not isinstance(state, dict):
        return [f"{state_file}: not valid JSON"]
    problems = []
    if "train" in state and not is_finished(Path(state["train"]["output"]).parent):
        problems.append("train recorded as done but its run folder is unfinished")
    if "export" in state and export_problems(export_out):
        problems.append("export recorded as done but the folder is not complete")
    if "benchmark" in state and read_json(export_out / "benchmark.json") is None:
        problems.append("benchmark recorded as done but benchmark.json is unreadable")
    return problems


def pipeline_kills(work: Path, *, points: int, rng: random.Random, log=print) -> dict:
    """Kill ``toolkit pipeline run`` at random line events of the pipeline, training and export code."""
    work.mkdir(parents=True, exist_ok=True)
    export_out = work / "exported" / "tiny"
    spec = work / "tiny.toml"
    spec.write_text(PIPELINE.format(data=DATA, size=IMAGE_SIZE, out=export_out))
    args = ["pipeline", "run", str(spec), "--work", str(work / "runs")]
    modules = "toolkit.pipeline,toolkit.export,toolkit.train.fit,toolkit.train.runs,toolkit.bench"

    def clean():
        shutil.rmtree(work / "runs", ignore_errors=True)
        shutil.rmtree(work / "exported", ignore_errors=True)

    total = _count_events(args, modules, work, prepare=clean)
    rows = []
    for i in range(points):
        clean()
        at = rng.randint(1, total)
        killed = run(killer_cmd(at, modules, *args))
        problems = pipeline_problems(work / "runs", export_out)
        rerun = run(toolkit_cmd(*args))
        again = run(toolkit_cmd(*args))  # a third run must find every step done
        skipped = again.stderr.count("unchanged since the last run")
        row = {"at": at, "of": total, "killed": killed.killed, "trusted_but_broken": problems,
               "rerun_rc": rerun.returncode, "rerun_error": (rerun.error_lines or [""])[0],
               "complete": not export_problems(export_out) and not pipeline_problems(work / "runs", export_out),
               "steps_skipped_next": skipped, "next_rc": again.returncode, "next_error": again.stderr[-600:]
               if again.returncode or skipped != 3 else "", "staging_left": leftovers(export_out.parent, STAGING)}
        log(f"pipeline kill {i + 1}: line event {at}/{total}; broken but trusted: {problems or 'none'}; "
            f"re-run rc {rerun.returncode}; next run skipped {skipped} steps")
        rows.append(row)
    return {"events": total, "kills": rows}


def cache_kills(work: Path, run_dir: Path, *, points: int, rng: random.Random, log=print) -> dict:
    """Kill ``toolkit finetune --cache-features`` at random line events of the feature cache.

    Afterwards every entry the cache would trust must hold exactly the features of an undisturbed run,
    and the re-run must finish.
    """
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)

    def args(out: Path) -> list[str]:
        return ["finetune", "happy", "--weights", str(run_dir), "--data", DATA, "--image-size", str(IMAGE_SIZE),
                "--cache-features", "--head", "keras", "--epochs", "2", "--batch-size", "16", "--patience", "0",
                "--out", str(out)]

    # One undisturbed run counts the line events and leaves the reference features.
    reference_cache = work / "cache-reference"
    for p in (reference_cache, work / "ref-run"):
        shutil.rmtree(p, ignore_errors=True)
    modules = "toolkit.train.features"
    count_file = work / "events.txt"
    counted = run(killer_cmd(0, modules, *args(work / "ref-run"), count_file=count_file),
                  env=child_env(TOOLKIT_CACHE=str(reference_cache)))
    if counted.returncode != 0:
        raise RuntimeError(f"reference caching run failed: {counted.stderr[-2000:]}")
    total = int(count_file.read_text())
    reference = {p.name: np.load(p / "features.npy") for p in (reference_cache / "features").iterdir()
                 if (p / "meta.json").exists()}
    rows = []
    for i in range(points):
        cache = work / f"cache-{i}"
        out = work / f"run-{i}"
        for p in (cache, out):
            shutil.rmtree(p, ignore_errors=True)
        env = child_env(TOOLKIT_CACHE=str(cache))
        entries = cache / "features"  # where the toolkit keeps features under $TOOLKIT_CACHE
        at = rng.randint(1, total)
        killed = run(killer_cmd(at, modules, *args(out)), env=env)
        trusted, wrong = _trusted_entries(entries, reference)
        untrusted = sorted(p.name for p in entries.glob(".tmp-*")) if entries.is_dir() else []
        rerun = run(toolkit_cmd(*args(out), "--resume") if (out / "config.json").exists()
                    else toolkit_cmd(*args(out)), env=env)
        trusted_after, wrong_after = _trusted_entries(entries, reference)
        row = {"at": at, "of": total, "killed": killed.killed, "trusted": trusted, "trusted_but_wrong": wrong,
               "untrusted_tmp": len(untrusted), "rerun_rc": rerun.returncode,
               "rerun_error": (rerun.error_lines or [""])[0], "wrong_after_rerun": wrong_after,
               "entries_after_rerun": trusted_after, "tmp_after_rerun": len(list(entries.glob(".tmp-*")))}
        log(f"cache kill {i + 1}: line event {at}/{total}; trusted entries {trusted} (wrong: {wrong}), "
            f"unfinished {len(untrusted)}; re-run rc {rerun.returncode}, entries {trusted_after}, "
            f"wrong {wrong_after}")
        rows.append(row)
    return {"events": total, "kills": rows}


def _trusted_entries(cache: Path, reference: dict) -> tuple[int, int]:
    """(entries the cache would use, how many of them differ from the undisturbed run's features)."""
    import numpy as np

    from toolkit.train.features import list_cache, open_entry

    trusted = wrong = 0
    for row in list_cache(cache):
        if not row["complete"]:
            continue
        entry = open_entry(cache / row["key"], row["key"], row.get("n", -1))
        if entry is None:
            continue
        trusted += 1
        ref = reference.get(row["key"])
        if ref is None or not np.array_equal(np.asarray(entry.x), ref):
            wrong += 1
    return trusted, wrong
