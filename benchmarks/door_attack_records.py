"""Two parts of :mod:`benchmarks.door_attack` that restart or starve the door rather than flood it.

- ``retained``: a retained unlock command with the right token sits on the broker (``mosquitto_pub -r``); the
  door is started twice: how often does it open with nobody asking?
- ``diskfull``: ``--snapshots`` and ``--event-log`` on a 300 KB tmpfs (needs root to mount), every frame votes
  (``--threshold 0``), six openings: how many reach the event log and keep their snapshot, and how many
  "not saved" lines does the log get?
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.door_attack_rig import Broker, Door, MqttClient, camera_folder
from toolkit.runtime.security import new_token


def retained_part(code: Path, model: Path, seconds: float, out) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="door-attack-retained-"))
    token = new_token()
    (tmp / "token").write_text(token)
    (tmp / "token").chmod(0o600)
    with Broker() as broker:
        publisher = MqttClient(broker.port)
        publisher.command(token, retain=True)  # mosquitto_pub -r -t toolkit/door/unlock/set -m '{...right token}'
        time.sleep(0.5)
        publisher.close()
        for start in (1, 2):
            args = ["--model", str(model), "--camera", str(camera_folder(tmp / "cam")), "--loop", "--fps", "5",
                    "--relay", "log", "--stale", "5", "--token-file", str(tmp / "token"), "--mqtt",
                    f"127.0.0.1:{broker.port}", "--mqtt-discovery-prefix", ""]  # fmt: skip
            with Door(code, args) as door:
                time.sleep(min(seconds, 8))
            log = door.final_log
            opened = log.count("door UNLOCKED")
            warning = next((line for line in log.splitlines() if "RETAINED" in line), "no warning")
            out(f"start {start}: the door opened {opened} time(s) with nobody asking; log: {warning.strip()[:260]}")


@contextlib.contextmanager
def small_disk(size_kb: int):
    """A ``size_kb`` tmpfs mounted on a temporary folder (root), or None when it cannot be mounted."""
    folder = Path(tempfile.mkdtemp(prefix="door-attack-disk-"))
    mounted = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(folder)], capture_output=True
    ).returncode == 0  # fmt: skip
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def diskfull_part(code: Path, model: Path, seconds: float, out) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="door-attack-diskfull-"))
    cam = camera_folder(tmp / "cam")
    with small_disk(300) as disk:
        if disk is None:
            out("diskfull: skipped (mounting a tmpfs needs root)")
            return
        snaps, events = disk / "snapshots", disk / "events.jsonl"
        # Every frame votes (threshold 0, no face detector); an opening every ~1.2 s; a routine sample every 0.2 s.
        args = ["--model", str(model), "--camera", str(cam), "--loop", "--fps", "10", "--detector", "none",
                "--threshold", "0", "--votes", "1", "--window", "1", "--open-seconds", "0.2", "--cooldown", "1",
                "--relay", "log", "--snapshots", str(snaps), "--snapshot-every", "0.2", "--event-log", str(events),
                "--max-frames", "200"]  # fmt: skip
        with Door(code, args) as door:
            deadline = time.monotonic() + 120
            while door.text().count("door UNLOCKED") < 6:
                if door.proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            door.proc.terminate()  # six openings: stop (SIGTERM locks and ends the loop)
        log = door.final_log
        opened = log.count("door UNLOCKED")
        lines = [json.loads(x) for x in events.read_text().splitlines() if x.strip().endswith("}")]
        in_log = sum(1 for e in lines if e.get("opened"))
        kept = sorted(p.name for p in snaps.glob("*.jpg"))
        opened_kept = sum(1 for n in kept if n.endswith("-opened.jpg"))
        samples = sum(1 for n in kept if n.endswith("-sample.jpg"))
        not_saved = sum(1 for line in log.splitlines() if "not saved" in line)
        sizes = [p.stat().st_size for p in snaps.glob("*-opened.jpg")]
        per = f"{sum(sizes) / len(sizes) / 1024:.0f} KB each" if sizes else "none"
        out(f"diskfull (300 KB tmpfs): {opened} openings; {in_log} in the event log; {opened_kept} kept their "
            f"snapshot; {samples} routine samples left; {not_saved} 'not saved' log lines; "
            f"{len(lines)} event-log lines; opening snapshots {per}")  # fmt: skip
