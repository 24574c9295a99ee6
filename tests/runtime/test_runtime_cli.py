"""``toolkit door ...`` end to end: run on a folder camera, collect, bench, run+serve in a subprocess; the base
install's one-line errors. HTTP with the standard library only, as on a ``.[door]`` install (no httpx)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image
from runtime_support import frame, free_port, http_get, http_post, make_export

from toolkit.cli import main


def _camera(folder, values):
    folder.mkdir()
    for i, v in enumerate(values):
        Image.fromarray(frame(v)).save(folder / f"{i:03d}.png")
    return folder


def test_run_dry_on_a_folder(export_dir, tmp_path, capsys):
    cam = _camera(tmp_path / "cam", [40, 220, 220, 40])
    log = tmp_path / "events.jsonl"
    rc = main(["door", "run", "--model", str(export_dir), "--camera", str(cam), "--votes", "2", "--window", "3",
               "--event-log", str(log), "--quiet"])  # fmt: skip
    assert rc == 0
    assert "stopped after 4 frames; relay locked" in capsys.readouterr().out
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["decision"] for e in events[:4]] == ["locked", "locked", "open", "open"]
    assert events[-1]["reason"] == "door loop stopped"


def test_old_door_flags_from_systemd_units_still_start_with_one_line_each(export_dir, tmp_path, capsys):
    cam = _camera(tmp_path / "cam", [40, 220, 220, 40])
    rc = main(["door", "run", "--model", str(export_dir), "--camera", str(cam), "--k", "2", "--n", "3",
               "--face", "none", "--quiet"])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0 and "stopped after 4 frames; relay locked" in out.out
    assert out.err.splitlines() == ["warning: --k is deprecated; use --votes",
                                    "warning: --n is deprecated; use --window",
                                    "warning: --face is deprecated; use --detector"]


def test_user_errors_are_one_line(export_dir, tmp_path, capsys):
    cases = [
        (["door", "run", "--model", str(tmp_path), "--camera", str(tmp_path)], "no manifest"),
        (["door", "run", "--model", str(export_dir), "--camera", str(tmp_path / "nope")], "no such file or folder"),
        (["door", "run", "--model", str(export_dir), "--camera", "0", "--votes", "4", "--window", "3"], "1 <= k <= n"),
        (["door", "run", "--model", str(export_dir), "--camera", "0", "--relay", "servo"], "'servo' is not one of"),
        (["door", "collect", "--camera", str(tmp_path), "--label", "../x", "--out", str(tmp_path)], "--label"),
        (["door", "serve", "--model", str(tmp_path / "missing")], "no manifest"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_collect_writes_an_image_folder(tmp_path, capsys):
    cam = _camera(tmp_path / "cam", [10, 20, 30])
    out = tmp_path / "dataset"
    assert main(["door", "collect", "--camera", str(cam), "--label", "smile", "--out", str(out), "--every", "0",
                 "--count", "2"]) == 0  # fmt: skip
    files = sorted((out / "smile").iterdir())
    assert len(files) == 2 and all(f.suffix == ".jpg" for f in files)
    assert Image.open(files[0]).size == (160, 120)
    assert "saved 2 photos" in capsys.readouterr().out


# The interpreter without the given modules, as if they were not installed: ``import X`` raises ModuleNotFoundError.
WITHOUT = "import sys\nfor m in {mods!r}: sys.modules[m] = None\nfrom toolkit.cli import main\nsys.exit(main({argv!r}))"


def _without(modules: list[str], argv: list[str]) -> subprocess.CompletedProcess:
    code = WITHOUT.format(mods=modules, argv=argv)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_bench_prints_latency_and_overhead_without_httpx(export_dir):
    # httpx is a dev tool: the README's Pi command must run on a `.[door]` install.
    p = _without(["httpx"], ["door", "bench", "--model", str(export_dir / "model.onnx"), "--frames", "30"])
    assert p.returncode == 0, p.stderr
    assert "frame->decision  tiny (model.onnx, none, 64x64, threads=1): p50" in p.stdout
    assert "over 30 frames" in p.stdout and "/predict overhead" in p.stdout and "overhead p50" in p.stdout


@pytest.mark.parametrize("missing, command, purpose", [
    ("fastapi", "door serve --model {model} --port {port}", "the HTTP API"),
    ("uvicorn", "door serve --model {model} --port {port}", "the HTTP API"),
    ("fastapi", "door run --model {model} --camera {cam} --serve --port {port}", "the HTTP API"),
    ("cv2", "door run --model {model} --camera 0", "--camera 0"),
    ("cv2", "door run --model {model} --camera {cam} --detector haar", "--detector haar"),
    ("paho", "door run --model {model} --camera {cam} --mqtt 127.0.0.1:{port} --quiet", "--mqtt"),
])  # fmt: skip
def test_base_install_names_the_door_extra(export_dir, tmp_path, missing, command, purpose):
    cam = _camera(tmp_path / "cam", [40])
    argv = command.format(model=export_dir, cam=cam, port=free_port()).split()
    p = _without([missing], argv)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [
        f"error: {purpose} needs the door extra ({missing} is not installed): pip install 'door-camera-toolkit[door]'"
    ]


def test_run_and_serve_in_one_process(export_dir, tmp_path):
    cam = _camera(tmp_path / "cam", [220] * 3)
    model = tmp_path / "model"
    shutil.copytree(export_dir, model)
    port = free_port()
    env = {**os.environ, "TOOLKIT_DOOR_TOKEN": "tok-of-the-front-door"}
    cmd = [sys.executable, "-m", "toolkit", "door", "run", "--model", str(model), "--camera", str(cam)]
    cmd += ["--loop", "--fps", "20", "--serve", "--port", str(port), "--quiet", "--open-seconds", "0.5"]
    cmd += ["--watch", "0.2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = http_get(f"{url}/v2/health/ready", timeout=1)
                if ready.status_code == 200:
                    break
            except (OSError, http.client.HTTPException):  # not listening yet
                pass
            time.sleep(0.1)
        assert ready is not None and ready.status_code == 200, proc.stderr.read() if proc.poll() else ready
        auth = {"Authorization": "Bearer tok-of-the-front-door"}
        assert http_post(f"{url}/door/open", headers=auth).status_code == 200
        assert http_post(f"{url}/predict", (cam / "000.png").read_bytes()).json()["decision"] is True
        metrics = http_get(f"{url}/metrics").text
        assert 'toolkit_door_events_total{event="open"}' in metrics
        make_export(model, threshold=0.75)  # re-export in place: --watch reloads it
        deadline = time.monotonic() + 10
        while http_get(f"{url}/v2/models/tiny").json()["parameters"]["threshold"] != 0.75:
            assert time.monotonic() < deadline, "the model was not hot-reloaded"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "relay locked" in out


def test_serve_on_a_busy_port_is_a_one_line_error(export_dir, capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["door", "serve", "--model", str(export_dir), "--port", str(port), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --host 127.0.0.1 --port") and "cannot listen there" in err


def test_door_warns_in_one_line_when_the_manifest_figures_are_synthetic(export_dir, tmp_path, capsys):
    folder = tmp_path / "synthetic"
    shutil.copytree(export_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["data"] = {"spec": "synthetic:happy", "kind": "synthetic"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    cam = _camera(tmp_path / "cam", [40, 220])
    assert main(["door", "run", "--model", str(folder), "--camera", str(cam), "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "synthetic" in line]
    assert lines == [f"warning: {folder}: its threshold and false-accept rate were measured on synthetic images "
                     f"(synthetic:happy), not on real photos; check them on your camera's photos: "
                     f"toolkit evaluate {folder} --data PHOTOS"]
    assert main(["door", "run", "--model", str(export_dir), "--camera", str(cam), "--quiet"]) == 0
    assert "synthetic" not in capsys.readouterr().err  # the tiny test export names no data: no claim, no warning


def test_door_run_prints_a_far_measured_as_zero_as_its_bound(export_dir, tmp_path, capsys):
    """Issue 23, defect 9: 0 false accepts in 30 negatives printed as "0.0000"; the export's rule of three says
    ≤ 10 %, and the door now prints the same."""
    from toolkit import metrics

    folder = tmp_path / "zero"
    shutil.copytree(export_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["files"]["model.onnx"]
    entry.update(far=0.0, frr=0.2, validation={**entry.get("validation", {}), "negatives": 30, "positives": 30,
                                                "far_upper_95": metrics.far_upper_95(30)})  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    cam = _camera(tmp_path / "cam", [40, 220])
    assert main(["door", "run", "--model", str(folder), "--camera", str(cam), "--votes", "2", "--window", "3"]) == 0
    [line] = [x for x in capsys.readouterr().err.splitlines() if "false-accept rate" in x]
    assert "false-accept rate ≤ 10 % per frame (0 of 30)" in line and "0.0000" not in line
    assert "≤ 0.028 if frames were independent, up to ≤ 0.1 if they were identical" in line  # 3 p² - 2 p³ at 0.1
    assert metrics.rate_text(15 / 719, 719) == "2.09 % per frame (15 of 719)"
