"""The door's fault drill: inject each fault into a running door and print what the door did.

    python -m benchmarks.door_faults --model exported/happy [--only TEXT]

Each scenario runs a fresh door (:mod:`benchmarks.door_rig`: the real loop, ticker and watchdog, the
export's real ONNX model in a temporary copy, so a scenario may corrupt it, a gpiozero relay on a mock
pin, a scripted camera). Most faults strike while the door is open and the scene keeps smiling (the
worst case). Checks:

- every energised period of the relay was started by a logged decision: k happy frames among the
  last n, or a manual unlock;
- every energised period ended within the open period plus one tick, in real time on the pin;
- while the fault lasts, the relay is locked and health is not ready (where the fault creates doubt);
- after the fault, health is ready again (the recovery time); the relay is locked when the loop stops.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import cli
from benchmarks.door_rig import DrillTimings, Rig, pin_class
from toolkit.inference.manifest import MANIFEST_NAME, load_manifest


@dataclass
class FaultResult:
    fault: str
    door: str  # what the relay did during the fault
    health: str  # what /v2/health/ready would have said
    recovery_s: float | None  # from the fault's end to ready again
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Callable[[Rig], None]
    clear: Callable[[Rig], None] = lambda rig: setattr(rig.camera, "mode", "ok")
    expect: str = "locked"  # locked | normal (no doubt: the door keeps deciding) | stuck | manual
    doubt: bool = True  # health must be not ready while the fault lasts
    instant: bool = False  # a clock jump: it happens, and is over
    start_open: bool = True  # inject while the door is open (else: locked, scene neutral)
    detect: float = 0.1  # seconds after injection by which the door must have reacted
    duration: float | None = None  # how long the fault lasts; None = DrillTimings.fault_seconds


def _camera(mode: str) -> Callable[[Rig], None]:
    return lambda rig: setattr(rig.camera, "mode", mode)


def _corrupt_model(rig: Rig) -> None:
    manifest = load_manifest(rig.folder)
    (rig.folder / manifest.serve).write_bytes(b"\x08\x07garbage, not an ONNX graph" * 100)
    rig.reloaded = rig.holder.reload()  # what SIGHUP or --watch would do


def _refuse(*states: bool) -> Callable[[Rig], None]:
    def inject(rig: Rig) -> None:
        rig.pin.refuse = set(states)

    return inject


def _unlock_while_unplugged(rig: Rig) -> None:
    rig.camera.mode = "disconnect"
    time.sleep(0.1)
    rig.loop.manual_open()  # what an authenticated POST /door/open does


def scenarios(t: DrillTimings) -> list[Scenario]:
    stale = t.stale_seconds + t.tick + t.slack  # no frame for stale_seconds, noticed by the next tick
    frame = 1.0 / t.fps + t.slack
    ok = _camera("ok")
    return [
        Scenario("camera stalls (read blocks)", _camera("stall"), detect=stale),
        Scenario("camera frozen (same frame again)", _camera("frozen"), detect=stale),
        Scenario("camera disconnects", _camera("disconnect"), detect=frame),
        Scenario("black frames", _camera("black"), detect=frame),
        Scenario("corrupt frames (NaN, RGBA, grey)", _camera("corrupt"), detect=frame),
        Scenario("wrong frame size (8x8)", _camera("tiny"), detect=frame),
        Scenario("model file garbage, hot reload", _corrupt_model, lambda rig: None, "normal", doubt=False),
        Scenario("model raises", lambda rig: setattr(rig, "model_fails", True),
                 lambda rig: setattr(rig, "model_fails", False), detect=frame),
        Scenario("relay fails to unlock", _refuse(True), _refuse(), start_open=False, detect=t.k / t.fps + t.slack),
        Scenario("relay fails to lock", _refuse(False), _refuse(), "stuck",
                 detect=t.open_seconds + t.tick + t.slack, duration=t.open_seconds + t.fault_seconds),
        Scenario("monotonic clock jumps back 1 h", lambda rig: setattr(rig.clock, "offset", -3600.0), ok,
                 instant=True, detect=t.tick + t.slack),
        Scenario("monotonic clock jumps ahead 1 h", lambda rig: setattr(rig.clock, "offset", 3600.0), ok,
                 instant=True, detect=t.tick + t.slack),
        Scenario("wall clock jumps back 1 day", lambda rig: setattr(rig, "wall_offset", -86400.0), ok,
                 "normal", doubt=False),
        Scenario("manual unlock, camera unplugged", _unlock_while_unplugged, ok, "manual", start_open=False,
                 detect=frame),
    ]  # fmt: skip


def _wait(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Monotonic time at which predicate() first held, or None after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.005)
    return None


def run_scenario(sc: Scenario, folder: Path, t: DrillTimings, factory, events: Path) -> FaultResult:
    """Run one fault against a fresh door; returns what happened and every broken rule."""
    rig = Rig(folder, t, factory, events)
    result = FaultResult(sc.name, "", "", None)
    problems = result.problems
    rig.thread.start()
    try:
        if _wait(rig.ready, 3.0) is None:
            problems.append("never ready before the fault")
        if sc.start_open:
            rig.camera.happy = True
            if _wait(rig.energised, 3.0) is None:
                problems.append("a smiling scene did not open the door")
            time.sleep(0.05)  # strike early in the open period
        else:
            rig.camera.happy = True
        was_open = rig.energised()
        t_inject = time.monotonic()
        sc.inject(rig)
        samples = []  # (time, ready, energised): what a health probe and a meter on the relay see
        end = t_inject + (0.0 if sc.instant else sc.duration or t.fault_seconds)
        while True:
            samples.append((time.monotonic(), rig.ready(), rig.energised()))
            if time.monotonic() >= end:
                break
            time.sleep(0.01)
        t_clear = time.monotonic()
        sc.clear(rig)
        t_ready = _wait(rig.ready, 3.0)
        if t_ready is None:
            problems.append("health not ready 3 s after the fault ended")
        else:
            result.recovery_s = t_ready - (t_inject if sc.instant else t_clear)
        if _wait(rig.energised, t.open_seconds + t.cooldown_seconds + 2.0) is None:
            problems.append("the door did not open again after the fault")
        rig.camera.happy = False
    finally:
        _wait(lambda: not rig.energised(), t.open_seconds + 2 * t.tick + t.slack)
        rig.camera.mode = "ok"
        rig.stop.set()
        rig.thread.join(timeout=5)
        rig.loop.close()
    _judge(sc, rig, t, result, samples, t_inject, t_clear)
    if sc.start_open and not was_open and sc.expect == "locked":
        result.door = "already locked when the fault struck (busy machine); stayed locked"
    if rig.thread.is_alive():
        problems.append("the door loop did not stop")
    if rig.energised() or rig.relay.unlocked:
        problems.append("relay energised after the loop stopped")
    return result


def _judge(sc: Scenario, rig: Rig, t: DrillTimings, result: FaultResult, samples, t_inject, t_clear) -> None:
    problems = result.problems
    history = rig.pin.history
    rises = [when for (when, on) in history if on]
    periods = [(a, b) for (a, on), (b, _) in zip(history, history[1:]) if on]
    if history[-1][1]:
        periods.append((history[-1][0], time.monotonic()))
    events = [json.loads(line) for line in rig.events.read_text().splitlines()]
    opened = [e for e in events if e["opened"]]
    if len(rises) != len(opened):
        problems.append(f"relay energised {len(rises)} times for {len(opened)} logged openings")
    problems += _unjustified(events, t.k, t.n, manual_ok=sc.expect == "manual")
    longest = t.open_seconds + t.tick + t.slack
    for a, b in periods:
        allowed = longest + (max(0.0, t_clear - a) if sc.expect == "stuck" else 0.0)
        if b - a > allowed:
            problems.append(f"relay energised for {b - a:.2f} s (at most {allowed:.2f} s)")
    after = [s for s in samples if s[0] >= t_inject + sc.detect]
    if not sc.instant and len(after) < 5:
        problems.append(f"only {len(after)} health samples after {sc.detect:.2f} s into the fault")
    if sc.expect == "locked" and any(on for _, _, on in after):
        problems.append(f"relay energised more than {sc.detect:.2f} s into the fault")
    if sc.doubt and not sc.instant and any(ok for _, ok, _ in after):
        problems.append(f"health ready more than {sc.detect:.2f} s into the fault")
    if not sc.doubt and not all(ok for _, ok, _ in samples):
        problems.append("health not ready although nothing was in doubt")
    if sc.inject is _corrupt_model and (getattr(rig, "reloaded", True) or rig.holder.last_error is None):
        problems.append("the corrupt model was not refused")
    falls = [when for (when, on) in history if not on and when >= t_inject]
    result.door = _door_text(sc, rig, t, falls, rises, t_inject, t_clear)
    result.health = _health_text(sc, samples, t_inject, result.recovery_s)


def _unjustified(events: list[dict], k: int, n: int, manual_ok: bool) -> list[str]:
    """Openings not backed by k happy frames among the last n (faults reset the count), or manual when not allowed."""
    problems, window = [], []
    for e in events:
        if e["decision"] == "manual_open":
            if not manual_ok:
                problems.append("a manual opening nobody asked for")
            continue
        if e["probability"] is None:  # a fault (the drill crops no faces): the policy forgot its votes
            window = []
            continue
        window = (window + [e["probability"] is not None and e["probability"] >= 0.5])[-n:]
        if e["opened"] and sum(window) < k:
            problems.append(f"opened with {sum(window)} happy frames among the last {len(window)}")
    return problems


def _door_text(sc, rig, t, falls, rises, t_inject, t_clear) -> str:
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    if sc.expect == "stuck":
        after = [f for f in falls if f >= t_clear]
        return f"energised while the pin refuses; locked {ms(after[0] - t_clear)} after it works" if after else "?"
    if sc.expect == "manual":
        opened = [r for r in rises if r >= t_inject]
        shut = [f for f in falls if opened and f > opened[0]]
        if opened and shut:
            return f"manual unlock: open {shut[0] - opened[0]:.2f} s, then locked"
        return "manual unlock did not open the door"
    if sc.expect == "normal":
        again = any(r > t_inject for r in rises)
        return "no effect: locked at the period's end" + (", reopened by k-of-n" if again else "")
    if not sc.start_open:
        return "stayed locked"
    if not falls:
        return "never locked"
    began = max((r for r in rises if r <= t_inject), default=None)
    natural = began is not None and abs(falls[0] - began - t.open_seconds) < 0.05
    return f"locked in {ms(falls[0] - t_inject)}" + (" (the open period ended first)" if natural else "")


def _health_text(sc, samples, t_inject, recovery) -> str:
    if sc.instant:
        return f"not ready {recovery * 1000:.0f} ms" if recovery and recovery > 0.001 else "ready"
    states = frozenset(ok for when, ok, _ in samples if when >= t_inject + sc.detect)
    return {frozenset({False}): "not ready", frozenset({True}): "ready", frozenset(): "-"}.get(states, "mixed")


def copy_export(folder: Path, dest: Path) -> Path:
    """The manifest and its ONNX files (what the door loads), into dest."""
    manifest = load_manifest(folder)
    dest.mkdir(parents=True)
    shutil.copy2(folder / MANIFEST_NAME, dest / MANIFEST_NAME)
    for name, entry in manifest.files.items():
        if entry.format == "onnx" and (folder / name).is_file():
            shutil.copy2(folder / name, dest / name)
    return dest


def run_drill(
    folder: Path, t: DrillTimings = DrillTimings(), only: str | None = None, out: Callable[[str], None] = print
) -> list[FaultResult]:
    """Run every scenario (or those whose name contains ``only``) and print the table."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    load_manifest(folder)  # a clear error for a wrong --model before anything runs
    chosen = [sc for sc in scenarios(t) if only is None or only in sc.name]
    previous = Device.pin_factory
    factory = MockFactory(pin_class=pin_class())
    Device.pin_factory = factory
    runtime_log = logging.getLogger("toolkit.runtime")
    level = runtime_log.level
    runtime_log.setLevel(logging.CRITICAL + 1)  # the faults are deliberate: the table says what happened
    results = []
    out(
        f"door fault drill: {folder}, k={t.k} of n={t.n}, open {t.open_seconds} s, cooldown {t.cooldown_seconds} s, "
        f"stale {t.stale_seconds} s, camera {t.fps:g} fps, each fault {t.fault_seconds} s, relay: gpiozero mock pin"
    )
    out(f"{'fault':34}  {'door during the fault':62}  {'health':16}  {'recovery':>8}  check")
    try:
        with tempfile.TemporaryDirectory(prefix="toolkit-faults-") as tmp:
            for i, sc in enumerate(chosen):
                model = copy_export(folder, Path(tmp) / f"model-{i}")
                r = run_scenario(sc, model, t, factory, Path(tmp) / f"events-{i}.jsonl")
                results.append(r)
                recovery = "-" if r.recovery_s is None else f"{r.recovery_s * 1000:.0f} ms"
                check = "ok" if r.ok else "FAIL: " + "; ".join(r.problems)
                out(f"{r.fault:34}  {r.door:62}  {r.health:16}  {recovery:>8}  {check}")
    finally:
        runtime_log.setLevel(level)
        factory.reset()
        Device.pin_factory = previous
    failed = sum(not r.ok for r in results)
    out(f"{len(results)} faults, {len(results) - failed} ok, {failed} failed")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the drill on ``--model`` and print its table; exit 1 if any fault broke a rule."""
    parser = cli.parser("door_faults", __doc__)
    parser.add_argument("--model", type=Path, required=True, help="export folder with manifest.json")
    parser.add_argument("--only", help="run only the faults whose name contains this text")
    ns = parser.parse_args(argv)
    results = run_drill(ns.model, only=ns.only, out=lambda line: print(line, flush=True))
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    cli.run(main)
