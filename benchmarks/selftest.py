"""The long reliability runs, one section each, then a table of every figure: ``python -m benchmarks.selftest``.

The CI tests (tests/reliability) run the same functions with small budgets; this runs them long
enough to mean something: five trainings killed at random moments and resumed, more kill points for
export, pipelines and the feature cache, several full disks, thousands of fuzz cases, and damaged
copies of every model format.

    python -m benchmarks.selftest [--only interrupt,diskfull,fuzz,models,audit] [--quick] [--seed N] [--out DIR]
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import cli
from benchmarks.common import run, toolkit_cmd

SECTIONS = ("interrupt", "diskfull", "fuzz", "models", "audit")


@dataclass(frozen=True)
class Budget:
    train_kills: int = 5
    epochs: int = 6
    export_kills: int = 6
    pipeline_kills: int = 4
    cache_kills: int = 6
    train_free_kb: tuple = (16, 60, 120, 200, 300)
    cache_free_kb: tuple = (8, 40)
    export_free_kb: tuple = (8, 30, 60)
    decode_cases: int = 3000
    folder_cases: int = 400
    h5_cases: int = 1000
    model_cuts: int = 20
    model_flips: int = 40


QUICK = Budget(train_kills=1, epochs=3, export_kills=1, pipeline_kills=1, cache_kills=1, train_free_kb=(60,),
               cache_free_kb=(8,), export_free_kb=(30,), decode_cases=200, folder_cases=40, h5_cases=150,
               model_cuts=4, model_flips=4)


def run_selftest(sections=SECTIONS, *, budget: Budget = Budget(), seed: int = 0, work: Path | None = None,
                 log: Callable[[str], None] = print) -> list[tuple[str, str, str]]:
    """Run the sections; returns the figures as (section, figure, value) rows (also printed as they come).

    Args:
        sections: names from SECTIONS.
        budget: how many kills, disks, fuzz cases and damaged files (QUICK: CI-sized).
        seed: seed of kill points and fuzz cases; the same seed repeats the same cases.
        work: keep the runs in this folder (default: a temporary one, removed).
        log: where progress lines go.
    """
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="toolkit-selftest-")) if own else Path(work)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: list[tuple[str, str, str]] = []
    needs_run = {"interrupt", "diskfull", "models"} & set(sections)
    try:
        ref = work / "interrupt" / "train" / "reference"
        train_result = None
        if "interrupt" in sections:
            from benchmarks.interrupt import train_kills

            t0 = time.monotonic()
            train_result = train_kills(work / "interrupt" / "train", kills=budget.train_kills, epochs=budget.epochs,
                                       rng=rng, log=log)
            rows += _train_rows(train_result, time.monotonic() - t0)
        elif needs_run:
            _train_reference(ref, budget.epochs)
        export_dir = work / "earlier-export"
        if needs_run:
            r = run(toolkit_cmd("export", str(ref), "--format", "onnx,tflite", "--quantize", "none", "--out",
                                str(export_dir)))
            if r.returncode != 0:
                raise RuntimeError(f"export of the reference run failed: {r.stderr[-1500:]}")
        if "interrupt" in sections:
            rows += _guarded("interrupt", lambda: _interrupt_rows(work, ref, budget, rng, log), log)
        if "diskfull" in sections:
            rows += _guarded("disk full", lambda: _diskfull_rows(work, ref, export_dir, budget, log), log)
        if "fuzz" in sections:
            rows += _guarded("fuzz", lambda: _fuzz_rows(budget, seed, log), log)
        if "models" in sections:
            from benchmarks.modelfiles import sweep

            t0 = time.monotonic()
            sources = [ref / "model.keras", export_dir / "model.onnx", export_dir / "model.tflite"]
            for r in sweep(sources, work / "models", cuts=budget.model_cuts, flips=budget.model_flips, seed=seed):
                log(f"model files {r['format']}: {r}")
                rows.append(("models", f"damaged .{r['format']} files: refused / loaded / escaped / crashed",
                             f"{r['refused']} / {r['loaded']} / {r['exception'] + r['refused-multiline']} / "
                             f"{r['crashed']} of {r['cases']}"))
            rows.append(("models", "time", f"{time.monotonic() - t0:.0f} s"))
        if "audit" in sections:
            from benchmarks.audit import audit, summary

            result = audit()
            status, lines = summary(result)
            for line in lines:
                log(line)
            verdict = {0: "no known vulnerabilities", 1: "VULNERABLE packages found",
                       3: "NOT AUDITED: no vulnerability database answered"}[status]
            rows.append(("audit", "pip-audit verdict", f"{verdict} (exit {status})"))
            for a in result["attempts"]:
                rows.append(("audit", f"service {a['service']}", a["error"][:90] if "error" in a else
                             f"{a['audited']} of {a['packages']} packages checked"))
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def _guarded(section: str, fn, log) -> list[tuple[str, str, str]]:
    """A section's rows, or one ERROR row: one broken check must not hide the figures of the others."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        log(f"{section}: ERROR {type(exc).__name__}: {exc}")
        return [(section, "ERROR", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")]


def _train_reference(out: Path, epochs: int) -> None:
    from benchmarks.common import train_args

    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    r = run(toolkit_cmd(*train_args(out, epochs=epochs)))
    if r.returncode != 0:
        raise RuntimeError(f"reference training failed: {r.stderr[-1500:]}")


def _train_rows(result: dict, seconds: float) -> list[tuple[str, str, str]]:
    kills = result["kills"]
    ok = [k for k in kills if k["resume_rc"] == 0]
    in_flight = sum(1 for k in kills if k["reported"] > k["durable"])
    return [
        ("train", "SIGKILL runs resumed to the end", f"{len(ok)}/{len(kills)} ({result['attempts']} kills drawn)"),
        ("train", "kill moments", "; ".join(k["where"] for k in kills)),
        ("train", "epochs lost beyond the one in flight (max)", str(max((k["lost_beyond_in_flight"] for k in kills),
                                                                        default=0))),
        ("train", "epochs re-run after resume (each run)", ", ".join(str(k["rerun"]) for k in kills)),
        ("train", "kills after an epoch ended, before its resume state was written", str(in_flight)),
        ("train", "resumed from the last complete resume state",
         f"{sum(k['resumed_from'] == k['durable'] for k in kills)}/{len(kills)}"),
        ("train", "same history and test metrics as the uninterrupted run",
         f"{sum(k['same_history'] and k['same_metrics'] for k in kills)}/{len(kills)} "
         f"(max |test loss delta| {max((k['test_loss_delta'] for k in kills), default=0):.2g})"),
        ("train", "uninterrupted reference", f"test loss {result['reference']['test_loss']:.4f}, accuracy "
                                             f"{result['reference']['test_accuracy']:.3f}"),
        ("train", "time", f"{seconds:.0f} s"),
    ]


def _interrupt_rows(work: Path, ref: Path, budget: Budget, rng, log) -> list[tuple[str, str, str]]:
    from benchmarks.interrupt import cache_kills, export_kills, pipeline_kills

    rows = []
    t0 = time.monotonic()
    e = export_kills(work / "interrupt" / "export", ref, points=budget.export_kills, rng=rng, log=log)
    k = e["kills"]
    rows += [
        ("export", "SIGKILL points (line events drawn from)", f"{len(k)} (of {e['events']})"),
        ("export", "folder after the kill: absent / complete / partial",
         f"{sum(r['after_kill'] == 'absent' for r in k)} / {sum(r['after_kill'] == 'complete' for r in k)} / "
         f"{sum(r['after_kill'] == 'PARTIAL' for r in k)}"),
        ("export", "re-runs completing, staging left after them",
         f"{sum(r['rerun_ok'] for r in k)}/{len(k)}, {sum(len(r['staging_after_rerun']) for r in k)}"),
    ]
    p = pipeline_kills(work / "interrupt" / "pipeline", points=budget.pipeline_kills, rng=rng, log=log)
    k = p["kills"]
    rows += [
        ("pipeline", "SIGKILL points (line events drawn from)", f"{len(k)} (of {p['events']})"),
        ("pipeline", "steps recorded done but broken", str(sum(len(r["trusted_but_broken"]) for r in k))),
        ("pipeline", "re-runs completing; next run skipping all 3 steps",
         f"{sum(r['rerun_rc'] == 0 and r['complete'] for r in k)}/{len(k)}; "
         f"{sum(r['steps_skipped_next'] == 3 for r in k)}/{len(k)}"),
    ]
    c = cache_kills(work / "interrupt" / "cache", ref, points=budget.cache_kills, rng=rng, log=log)
    k = c["kills"]
    rows += [
        ("cache", "SIGKILL points (line events drawn from)", f"{len(k)} (of {c['events']})"),
        ("cache", "trusted entries after the kill; wrong ones", f"{sum(r['trusted'] for r in k)}; "
                                                               f"{sum(r['trusted_but_wrong'] for r in k)}"),
        ("cache", "re-runs completing; wrong entries after them",
         f"{sum(r['rerun_rc'] == 0 for r in k)}/{len(k)}; {sum(r['wrong_after_rerun'] for r in k)}"),
        ("interrupt", "time (export, pipeline, cache)", f"{time.monotonic() - t0:.0f} s"),
    ]
    return rows


def _diskfull_rows(work: Path, ref: Path, export_dir: Path, budget: Budget, log) -> list[tuple[str, str, str]]:
    from benchmarks.diskfull import caching_full, export_full, training_full

    t0 = time.monotonic()
    results = [training_full(work / "disk", ref, free_kb=kb) for kb in budget.train_free_kb]
    # The fallback for users who may not mount: a file-size limit (EFBIG) instead of a small disk (ENOSPC).
    results.append(training_full(work / "disk", ref, free_kb=budget.train_free_kb[0], method="rlimit"))
    results += [caching_full(work / "disk", ref, free_kb=kb) for kb in budget.cache_free_kb]
    results += [export_full(work / "disk", ref, export_dir, free_kb=kb) for kb in budget.export_free_kb]
    rows = []
    for what, method in dict.fromkeys((r["what"], r["method"]) for r in results):
        part = [r for r in results if r["what"] == what and r["method"] == method]
        full = [r for r in part if r["rc"] != 0]
        for r in part:
            log(f"disk full {what}: {r['free_kb']} KB free ({method}): rc {r['rc']}, {r['error'] or 'fit'}")
        rows.append(("disk full", f"{what} ({method}): clear one-line error / runs that hit the full disk",
                     f"{sum(r['clear'] for r in full)}/{len(full)} (KB tried: "
                     f"{', '.join(str(r['free_kb']) for r in part)})"))
        rows.append(("disk full", f"{what} ({method}): earlier artifacts intact",
                     f"{sum(r['earlier_intact'] for r in full)}/{len(full)}"))
    example = next((r["error"] for r in results if r["error"]), "")
    rows.append(("disk full", "example message", example[:150]))
    rows.append(("disk full", "time", f"{time.monotonic() - t0:.0f} s"))
    return rows


def _fuzz_rows(budget: Budget, seed: int, log) -> list[tuple[str, str, str]]:
    from benchmarks.fuzz import fuzz_decode, fuzz_folders, fuzz_h5

    rows = []
    for fn, n in ((fuzz_decode, budget.decode_cases), (fuzz_folders, budget.folder_cases), (fuzz_h5, budget.h5_cases)):
        t0 = time.monotonic()
        tally = fn(n, seed)
        log(f"fuzz {tally.name}: {tally.row()}")
        rows.append(("fuzz", f"{tally.name}: cases / accepted / refused in one line / failures",
                     f"{tally.cases} / {tally.accepted} / {tally.refused} / {len(tally.failures)}"
                     + (f" ({tally.skipped_files} files skipped with a warning)" if tally.skipped_files else "")
                     + (f"  FIRST FAILURE: {tally.failures[0][:200]}" if tally.failures else "")))
        rows.append(("fuzz", f"{tally.name}: slowest case / total time",
                     f"{tally.slowest:.2f} s / {time.monotonic() - t0:.0f} s"))
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    width = max((len(f"{s}: {f}") for s, f, _ in rows), default=10)
    return "\n".join(f"{f'{s}: {f}':<{width}}  {v}" for s, f, v in rows)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the sections and print the table; exit 2 on bad flags."""
    parser = cli.parser("selftest", __doc__)
    parser.add_argument("--only", default="", help=f"comma list of sections: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="CI-sized budgets (one kill each, a few hundred "
                        "fuzz cases)")
    parser.add_argument("--seed", type=int, default=0, help="seed of kill points and fuzz cases; the same seed "
                        "repeats the same cases")
    parser.add_argument("--out", type=Path, help="keep the runs in this folder (default: a temporary one, removed)")
    ns = parser.parse_args(argv)
    sections = tuple(s.strip() for s in ns.only.split(",") if s.strip()) or SECTIONS
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        from toolkit.errors import ToolkitError

        raise ToolkitError("the self-test needs the dev extra (hypothesis, pip-audit): pip install -e '.[dev]'") \
            from None
    rows = run_selftest(sections, budget=QUICK if ns.quick else Budget(), seed=ns.seed, work=ns.out,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    cli.run(main)
