"""A transcript of the door adapting to its camera, end to end over its real interfaces.

    python -m benchmarks.adapt_door [--export runs/adapt-bench/export] [--per-class 12] [--out DIR]

Needs the hand-sign export that ``python -m benchmarks.adapt`` writes (the shipped head, trained on sign_digits
as photographed) and mosquitto. Steps, each printed:

1. a folder camera of sign_digits photos through the benchmark's "new camera" transform (``--per-class`` of each
   sign among those where the benchmark found a hand, photos not in the export's training set) and
   ``toolkit door run --camera DIR --relay log --serve --open-on 5 --state STATE --snapshots SNAP --mqtt ...``
   as a subprocess;
2. the snapshots the door keeps are labelled through the HTTP API (the true sign of each: the camera photo it
   matches), as the owner would on the page;
3. ``POST /door/adapt`` (the page's button); decision latency (event log) before and during the fit;
4. the switch in ``GET /door/state`` and on MQTT (``P/model``, ``P/adapt``); ``POST /door/adapt/rollback``;
5. ``toolkit door adapt`` from the CLI on 100 labelled photos (wall time), ``toolkit door versions``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks import cli
from benchmarks.adapt import DATA, LABELS, new_camera, split_files
from benchmarks.common import CHECKOUT

TOKEN = "transcript-token"


def call(url: str, method: str = "GET", body: dict | None = None, auth: bool = True):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if auth:
        req.add_header("Authorization", f"Bearer {TOKEN}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if r.headers.get_content_type() == "application/json" else raw


def p99(values) -> float:
    return float(np.percentile(values, 99)) if len(values) else float("nan")


def latencies(log: Path, t0: float, t1: float) -> list[float]:
    out = []
    for line in log.read_text().splitlines():
        e = json.loads(line)
        if t0 <= e.get("time", 0) <= t1 and e.get("latency_ms") and e.get("votes") is not None:
            out.append(e["latency_ms"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("adapt_door", __doc__)
    p.add_argument("--export", type=Path, default=CHECKOUT / "runs" / "adapt-bench" / "export")
    p.add_argument("--per-class", type=int, default=12)
    p.add_argument("--out", type=Path, default=Path("/tmp/adapt-door"))
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--mqtt-port", type=int, default=18883)
    p.add_argument("--no-cli", action="store_true", help="Skip step 5.")
    p.add_argument("--force", action="store_true", help="Press adapt with 'despite the guard rails' at once.")
    p.add_argument("--python", default=sys.executable, help="The interpreter of the door and the CLI (e.g. a venv "
                   "with only '.[door]' installed)")
    args = p.parse_args(argv)
    from PIL import Image

    from toolkit.images import decode_image

    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    cam, state, snaps = out / "camera", out / "state", out / "snapshots"
    cam.mkdir(parents=True)
    items = split_files(DATA, (40, 60))["target"]  # the benchmark's new-camera photos (not the head's training)
    truth = {}
    rng = np.random.default_rng(5)
    picked = []
    cached = np.load(args.export.parent / "target.npz")  # the benchmark's features: photos where a hand is found
    with_hand = {str(f) for f, row in zip(cached["files"], cached["x"], strict=True) if not np.isnan(row[0])}
    for c in range(10):
        mine = [f for f, lab in items if lab == c and str(f) in with_hand]
        picked += [(mine[j], c) for j in rng.choice(len(mine), min(len(mine), args.per_class), replace=False)]
    order = rng.permutation(len(picked))
    frames = []
    for i, j in enumerate(order):
        f, c = picked[j]
        img = new_camera(decode_image(f, None))
        Image.fromarray(img).save(cam / f"{i:04d}.png")
        frames.append((img.astype(np.float32), LABELS[c]))
        truth[f"{i:04d}.png"] = LABELS[c]
    print(f"$ camera: {len(frames)} photos of the new camera in {cam}")
    mosq = subprocess.Popen(["/usr/sbin/mosquitto", "-p", str(args.mqtt_port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    messages = []
    import paho.mqtt.client as paho

    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="transcript")
    sub.on_message = lambda c, u, m: messages.append((time.time(), m.topic, m.payload.decode()))
    time.sleep(0.5)
    sub.connect("127.0.0.1", args.mqtt_port)
    sub.subscribe("toolkit/door/model")
    sub.subscribe("toolkit/door/adapt")
    sub.loop_start()
    events = out / "events.jsonl"
    env = {**os.environ, "TOOLKIT_DOOR_TOKEN": TOKEN, "PYTHONPATH": str(CHECKOUT)}
    cmd = [args.python, "-m", "toolkit", "door", "run", "--model", str(args.export), "--camera", str(cam),
           "--relay", "log", "--serve", "--port", str(args.port), "--open-on", "5", "--state", str(state),
           "--snapshots", str(snaps), "--snapshot-every", "0.01", "--loop", "--fps", "4", "--event-log", str(events),
           "--mqtt", f"127.0.0.1:{args.mqtt_port}", "--quiet"]
    print("$ " + " ".join(cmd[2:]))
    door = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in door.stdout], daemon=True).start()
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(120):
            try:
                state0 = call(url + "/door/state", auth=False)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit("the door did not start:\n" + "".join(lines))
        print(f"GET /door/state -> version {state0['version']!r}, model {state0['model']}, threshold "
              f"{state0['threshold']}")
        # 2. label what the door kept, as the owner would (the true sign of the camera photo it shows)
        labelled, done = {}, set()
        deadline = time.time() + 600
        while time.time() < deadline and len(done) < len(frames):
            for s in call(url + "/door/snapshots?limit=500")["snapshots"]:
                img = np.asarray(Image.open(io.BytesIO(call(url + f"/door/snapshots/{s['name']}"))).convert("RGB"),
                                 np.float32)
                k = min(range(len(frames)), key=lambda i: float(np.mean((frames[i][0] - img) ** 2))
                        if frames[i][0].shape == img.shape else 1e18)
                if k in done:  # the same photo on the camera's next loop: one labelled copy is enough
                    continue
                call(url + f"/door/snapshots/{s['name']}/label", "POST", {"label": frames[k][1]})
                done.add(k)
                labelled[frames[k][1]] = labelled.get(frames[k][1], 0) + 1
            time.sleep(1)
        print(f"labelled through POST /door/snapshots/NAME/label: {dict(sorted(labelled.items()))}")
        status = call(url + "/door/adapt")
        print("GET /door/adapt -> labelled " + json.dumps({k: v["count"] for k, v in status["labelled"].items()}))
        t_idle0 = time.time()
        time.sleep(40)  # the door deciding without an adapt: the baseline p99
        t_idle1 = time.time()
        for force in (False, True) if not args.force else (True,):  # refused? then as "despite the guard rails"
            started = call(url + "/door/adapt", "POST", {"force": force})
            print(f"POST /door/adapt {json.dumps({'force': force})} -> {started['status']}")
            while (job := call(url + "/door/adapt")["job"])["status"] == "running":
                time.sleep(0.5)
            for line in job["lines"]:
                print("   | " + line)
            print(f"   -> {job['status']} ({job['message']})")
            if job["status"] == "adapted":
                break
        t_fit1 = time.time()
        idle, during = latencies(events, t_idle0, t_idle1), latencies(events, t_idle1, t_fit1)
        print(f"decision latency p99 without an adapt {p99(idle):.1f} ms ({len(idle)} frames), during the adapt "
              f"{p99(during):.1f} ms ({len(during)} frames, {t_fit1 - t_idle1:.1f} s): ratio "
              f"{p99(during) / p99(idle):.2f}")
        time.sleep(1.5)
        s = call(url + "/door/state", auth=False)
        print(f"GET /door/state -> version {s['version']!r}, threshold {s['threshold']}, frames judged: fps {s['fps']}")
        back = call(url + "/door/adapt/rollback", "POST", {})
        time.sleep(1.5)
        s = call(url + "/door/state", auth=False)
        print(f"POST /door/adapt/rollback -> {back}; GET /door/state -> version {s['version']!r}, threshold "
              f"{s['threshold']}")
        print("MQTT (toolkit/door/model, toolkit/door/adapt):")
        for t, topic, payload in messages:
            print(f"   {time.strftime('%H:%M:%S', time.gmtime(t))} {topic} {payload}")
        if args.no_cli:
            return 0
        # 5. the CLI on 100 labelled photos (10 per sign) while the door runs
        lab100 = out / "labelled100"
        for c, lab in enumerate(LABELS):
            (lab100 / lab).mkdir(parents=True)
            for k, (f, _) in enumerate([it for it in items if it[1] == c and str(it[0]) in with_hand][:10]):
                Image.fromarray(new_camera(decode_image(f, None))).save(lab100 / lab / f"{k:02d}.png")
        cli_cmd = [args.python, "-m", "toolkit", "door", "adapt", "--model", str(args.export), "--data",
                   str(lab100), "--state", str(state), "--force"]
        print("$ " + " ".join(cli_cmd[2:]))
        t0 = time.perf_counter()
        r = subprocess.run(cli_cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        print("".join("   | " + line + "\n" for line in (r.stdout + r.stderr).splitlines()), end="")
        print(f"   wall time {wall:.1f} s (exit {r.returncode})")
        time.sleep(1.5)
        print(f"GET /door/state -> version {call(url + '/door/state', auth=False)['version']!r} (chosen by the CLI)")
        r = subprocess.run([args.python, "-m", "toolkit", "door", "versions", "--state", str(state)], env=env,
                           capture_output=True, text=True)
        print("$ toolkit door versions --state " + str(state))
        print("".join("   | " + line + "\n" for line in (r.stdout + r.stderr).splitlines()), end="")
    finally:
        door.terminate()
        door.wait(timeout=20)
        sub.loop_stop()
        mosq.terminate()
        mosq.wait(timeout=10)
    return 0


if __name__ == "__main__":
    cli.run(main)
