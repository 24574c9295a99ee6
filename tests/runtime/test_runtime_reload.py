"""Hot reload: a valid new export is swapped in; a bad one is refused and the old model keeps serving."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest
from runtime_support import LiveServer, frame, http_get, http_post, jpeg, make_export

from toolkit.runtime.core.config import ModelConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.server import create_app


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _tamper(folder) -> None:
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"garbage")


def test_reload_swaps_valid_and_refuses_bad(export_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(export_dir, folder)
    holder = ModelHolder(ModelConfig(folder))
    events: list[str] = []
    holder.listeners.append(events.append)
    old = holder.predictor
    assert not holder.changed()
    make_export(folder, threshold=0.995)  # a re-export with a stricter threshold
    assert holder.changed() and holder.reload()
    assert holder.predictor is not old and holder.predictor.threshold == 0.995
    good = holder.predictor
    _tamper(folder)  # half-copied / tampered: sha256 no longer matches
    assert holder.reload() is False
    assert holder.predictor is good and "sha256" in holder.last_error
    assert holder.predictor.predict(frame(220)).probability > 0.9  # still serving
    assert events == ["reload", "reload_refused"]
    assert not holder.changed()  # the broken files are not retried in a loop


def test_watch_and_sighup_reload_under_a_live_server(export_dir, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(export_dir, folder)
    holder = ModelHolder(ModelConfig(folder))
    stop = threading.Event()
    holder.watch(0.05, stop)
    app = create_app(holder, ServeConfig())
    try:
        with LiveServer(app) as live:
            sha = http_get(f"{live.url}/v2/models/tiny").json()["parameters"]["sha256"]
            make_export(folder, threshold=0.7, name="tiny")
            assert _wait(lambda: holder.predictor.threshold == 0.7)
            _tamper(folder)
            assert _wait(lambda: holder.last_error is not None)
            r = http_get(f"{live.url}/v2/models/tiny")
            assert r.status_code == 200 and r.json()["parameters"]["threshold"] == 0.7  # old model kept
            assert r.json()["parameters"]["sha256"] == sha  # same graph bytes as before the tamper
            ok = http_post(f"{live.url}/predict", _png(220))
            assert ok.status_code == 200 and ok.json()["label"] == "smile"
            metrics = http_get(f"{live.url}/metrics").text
            assert 'toolkit_door_events_total{event="reload_refused"}' in metrics
    finally:
        stop.set()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads(export_dir, tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(export_dir, folder)
    holder = ModelHolder(ModelConfig(folder))
    previous = signal.getsignal(signal.SIGHUP)
    try:
        holder.install_sighup()
        make_export(folder, threshold=0.6)
        os.kill(os.getpid(), signal.SIGHUP)
        assert _wait(lambda: holder.predictor.threshold == 0.6)
    finally:
        signal.signal(signal.SIGHUP, previous)


def _png(value: int) -> bytes:
    return jpeg(value, fmt="PNG")
