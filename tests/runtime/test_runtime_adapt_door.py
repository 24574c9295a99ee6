"""The page's "Adapt to this camera" over real HTTP beside a running door: a snapshot labelled through the API,
the adapt in a background thread while frames keep being judged, the switch in /door/state, rollback, deletion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from adapt_support import camera_photo, make_chain_export, write_labelled
from PIL import Image
from runtime_support import http_get, http_post, http_request, serving
from runtime_support import wait_for as _wait_for

from toolkit.runtime.actuator import LogActuator
from toolkit.runtime.camera import open_source
from toolkit.runtime.core.config import DoorConfig, ModelConfig, PolicyConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.door import DoorLoop
from toolkit.runtime.server import create_app

TOKEN = "adapt token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}



def wait_for(check, seconds: float = 30.0):
    return _wait_for(check, seconds, every=0.05)


@pytest.fixture()
def door(tmp_path):
    export = make_chain_export(tmp_path / "export")
    cam = tmp_path / "camera"
    cam.mkdir()
    rng = np.random.default_rng(3)
    for i in range(8):
        Image.fromarray(camera_photo(i % 2, rng, 90.0)).save(cam / f"{i:03d}.png")
    config = DoorConfig(camera=str(cam), policy=PolicyConfig(k=2, n=3, open_seconds=0.2, cooldown_seconds=0.2),
                        fps=40, loop=True, snapshots=tmp_path / "snapshots", snapshot_every=0.05)
    holder = ModelHolder(ModelConfig(export, state=tmp_path / "state"))
    loop = DoorLoop(holder, open_source(str(cam), loop=True), config, LogActuator())
    with serving(loop, create_app(holder, ServeConfig(), door=loop, token=TOKEN)) as live:
        yield live, loop


def test_adapt_from_the_page_switches_between_frames_and_rolls_back(door):
    live, loop = door
    assert http_get(live.url + "/door/adapt").status_code == 401
    assert 'id="adapt-card"' in http_get(live.url + "/").text
    assert http_get(live.url + "/static/page/adapt.js").status_code == 200
    snap = wait_for(lambda: http_get(live.url + "/door/snapshots", headers=AUTH).json()["snapshots"])[0]["name"]
    moved = http_post(f"{live.url}/door/snapshots/{snap}/label", json.dumps({"label": "smile"}).encode(),
                      headers=JSON)
    assert moved.status_code == 200
    write_labelled(loop.snapshots.labelled, ("no_smile", "smile"), 12, cast=90.0)
    status = http_get(live.url + "/door/adapt", headers=AUTH).json()
    assert status["can_adapt"] and status["serving"] is None and status["versions"] == []
    assert status["labelled"]["smile"]["count"] == 13 and status["labelled"]["no_smile"]["count"] == 12
    assert http_get(live.url + "/door/state").json()["version"] is None
    before, faults = loop.frames, len(http_get(live.url + "/door/timeline").json()["faults"])
    started = http_post(live.url + "/door/adapt", b"{}", headers=JSON)
    assert started.status_code == 200 and started.json()["status"] == "running"
    done = wait_for(lambda: (s := http_get(live.url + "/door/adapt", headers=AUTH).json())["job"]["status"]
                    != "running" and s)
    assert done["job"]["status"] == "adapted", done["job"]
    assert done["serving"] == "v1" and done["versions"][0]["current"] and done["versions"][0]["cv_accuracy"] >= 0.9
    state = http_get(live.url + "/door/state").json()
    assert state["version"] == "v1"  # the policy takes the version's threshold with its first frame:
    wait_for(lambda: http_get(live.url + "/door/state").json()["threshold"] == pytest.approx(
        done["versions"][0]["threshold"]))
    assert loop.frames > before and len(http_get(live.url + "/door/timeline").json()["faults"]) == faults
    again = http_post(live.url + "/door/adapt/rollback", b"{}", headers=JSON)
    assert again.status_code == 200 and again.json()["serving"] is None
    assert http_get(live.url + "/door/state").json()["version"] is None
    gone = http_request("DELETE", live.url + "/door/adapt/versions/v1", headers=AUTH)
    assert gone.status_code == 200 and http_get(live.url + "/door/adapt", headers=AUTH).json()["versions"] == []
    photo = http_get(live.url + "/door/labelled/smile/snap-000.png", headers=AUTH)
    assert photo.status_code == 200 and photo.content[:4] == b"\x89PNG"
    assert list((loop.holder.config.state / "adapt").glob("features-*.npz"))  # the adapt cached the features
    assert http_request("DELETE", live.url + "/door/labelled/smile/snap-000.png", headers=AUTH).status_code == 200
    assert not list((loop.holder.config.state / "adapt").glob("features-*.npz"))  # and they go with a photo
    assert not (loop.snapshots.labelled / "smile" / "snap-000.png").exists()
    assert http_request("DELETE", live.url + "/door/labelled/smile/..%2F..%2Fx", headers=AUTH).status_code == 404


def test_a_dry_run_estimates_without_writing_or_switching(door):
    live, loop = door
    write_labelled(loop.snapshots.labelled, ("no_smile", "smile"), 12, cast=90.0)
    started = http_post(live.url + "/door/adapt", json.dumps({"dry_run": True}).encode(), headers=JSON)
    assert started.status_code == 200 and started.json()["status"] == "running"
    done = wait_for(lambda: (s := http_get(live.url + "/door/adapt", headers=AUTH).json())["job"]["status"]
                    != "running" and s)
    assert done["job"]["status"] == "estimated", done["job"]
    estimate = done["job"]["estimate"]
    assert estimate["n"] == 24 and estimate["counts"] == {"no_smile": 12, "smile": 12}
    assert estimate["accuracy"] >= 0.9 and estimate["current_accuracy"] <= 0.6  # the new camera's red cast
    assert estimate["interval_95"][0] <= estimate["accuracy"] <= estimate["interval_95"][1]
    assert done["versions"] == [] and done["serving"] is None and loop.holder.predictor.version is None
    assert loop.holder.adapt_result is None  # nobody is told of an estimate (MQTT hears adapts only)
    assert "estimate only, nothing written" in "\n".join(done["job"]["lines"])
