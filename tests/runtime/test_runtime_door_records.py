"""Records of openings on a full disk, relabelled photos that never overwrite each other, links never followed,
and a folder camera whose folder empties (a lost camera with backoff, not a spin)."""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runtime_support import frame

from toolkit.runtime import snapshots as snapshots_module
from toolkit.runtime.actuator import make_actuator
from toolkit.runtime.camera import FolderSource
from toolkit.runtime.core.config import DoorConfig, ModelConfig, PolicyConfig
from toolkit.runtime.core.eventlog import EventLog
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.door import DoorLoop
from toolkit.runtime.snapshots import SnapshotStore


def _noisy(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)  # ~40 KB as a JPEG


@pytest.fixture
def small_disk(monkeypatch):
    """The snapshot folder on a disk of ``quota`` bytes: a write that would pass it fails with ENOSPC."""
    state = {"quota": 0}
    real = snapshots_module._atomic

    def atomic(path: Path, data: bytes) -> None:
        used = sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file())
        if used + len(data) > state["quota"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(snapshots_module, "_atomic", atomic)
    return state


def test_openings_evict_routine_samples_on_a_full_disk_and_it_is_logged_once(tmp_path, small_disk, caplog):
    caplog.set_level(logging.WARNING, "toolkit.runtime")
    now = [1_700_000_000.0]
    store = SnapshotStore(tmp_path / "s", cap_bytes=10**9, every=0.0, wall=lambda: now[0])
    small_disk["quota"] = 120_000  # room for a few of these frames (~25 KB each as JPEG)
    names = []
    for i in range(12):  # routine samples fill the disk; the later ones are not kept
        now[0] += 1
        names.append(store.save(_noisy(i), {"opened": False, "probability": 0.1}, None))
    kept_samples = [n for n in names if n]
    assert 0 < len(kept_samples) < 12 and store.full
    for i in range(3):  # then the openings: each one gets in, evicting the oldest samples
        now[0] += 1
        name = store.save(_noisy(100 + i), {"opened": True, "probability": 0.9}, None)
        assert name is not None and name.endswith("-opened.jpg")
    listed = [s["name"] for s in store.list()]
    assert sum(n.endswith("-opened.jpg") for n in listed) == 3
    assert kept_samples[0] not in listed  # the oldest sample made room
    full_lines = [r for r in caplog.records if "not saved" in r.getMessage()]
    assert len(full_lines) == 1  # once when the disk filled, not once per frame


def test_an_openings_event_line_gets_room_from_samples(export_dir, tmp_path, monkeypatch):
    cam = tmp_path / "cam"
    cam.mkdir()
    Image.fromarray(frame(220)).save(cam / "0.png")
    cfg = DoorConfig(camera=str(cam), event_log=tmp_path / "events.jsonl", snapshots=tmp_path / "snaps",
                     policy=PolicyConfig(k=1, n=1, open_seconds=0.1, cooldown_seconds=0))  # fmt: skip
    door = DoorLoop(ModelHolder(ModelConfig(export_dir)), FolderSource(cam, loop=True), cfg, make_actuator("log", 17,
                    True))  # fmt: skip
    asked = []
    full = {"on": True}
    real_write = door._events.write

    def write(line: str) -> bool:  # the disk is full until a sample is evicted
        return False if full["on"] else real_write(line)

    def make_room(nbytes: int) -> int:
        asked.append(nbytes)
        full["on"] = False
        return nbytes

    monkeypatch.setattr(door._events, "write", write)
    monkeypatch.setattr(door.snapshots, "make_room", make_room)
    door.manual_open()
    door.close()
    assert asked and json.loads((tmp_path / "events.jsonl").read_text())["decision"] == "manual_open"


def test_event_log_on_a_full_device_reports_and_logs_once(caplog):
    caplog.set_level(logging.WARNING, "toolkit.runtime")
    log = EventLog(Path("/dev/full"))  # every write fails with ENOSPC, as on a full disk
    assert [log.write('{"n": 1}\n') for _ in range(50)] == [False] * 50
    log.close()
    assert log.lost == 50 and len([r for r in caplog.records if "event log" in r.getMessage()]) == 1


def test_relabelled_photos_never_overwrite_each_other(tmp_path):
    wall = [1_700_000_000.0]
    store = SnapshotStore(tmp_path / "s", cap_bytes=10**9, every=0.0, wall=lambda: wall[0])
    first = store.save(frame(220), {"opened": True}, None)
    a = store.relabel(first, "smile", ("no_smile", "smile"))
    second = store.save(frame(40), {"opened": True}, None)  # the same millisecond: the same name, now free again
    assert second == first
    b = store.relabel(second, "smile", ("no_smile", "smile"))
    assert a != b and a.exists() and b.exists()
    assert np.asarray(Image.open(a)).mean() > 150 > np.asarray(Image.open(b)).mean()  # both photos kept
    reviewed = [json.loads(x) for x in (store.labelled / ".reviewed.jsonl").read_text().splitlines()]
    assert [r["file"] for r in reviewed] == [a.name, b.name]


def test_links_in_the_snapshot_folder_are_not_listed_served_or_written_through(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not for the page")
    (folder / "20240101-000000-000-opened.jpg").symlink_to(secret)
    store = SnapshotStore(folder, cap_bytes=10**9, every=0.0)
    assert store.list() == []
    with pytest.raises(KeyError):
        store.path("20240101-000000-000-opened.jpg")
    kept = store.save(frame(220), {"opened": True}, None)
    (folder / kept).unlink()
    (folder / kept).symlink_to(secret)  # swapped for a link after it was listed
    with pytest.raises(KeyError):
        store.path(kept)
    tmp_name = folder / ".20990101-000000-000-opened.jpg.tmp"
    tmp_name.symlink_to(secret)  # a link planted at the temporary name
    snapshots_module._atomic(folder / "20990101-000000-000-opened.jpg", b"jpeg bytes")
    assert secret.read_bytes() == b"not for the page"


def test_an_emptied_folder_camera_backs_off_instead_of_spinning(export_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, "toolkit.runtime")
    cam = tmp_path / "cam"
    cam.mkdir()
    for i in range(3):
        Image.fromarray(frame(40)).save(cam / f"{i}.png")
    cfg = DoorConfig(camera=str(cam), loop=True, reconnect_min_seconds=0.05, reconnect_max_seconds=0.4,
                     policy=PolicyConfig(stale_seconds=5))  # fmt: skip
    door = DoorLoop(ModelHolder(ModelConfig(export_dir)), FolderSource(cam, loop=True), cfg,
                    make_actuator("log", 17, True))  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=door.run, args=(stop,))
    thread.start()
    time.sleep(0.3)
    for p in cam.iterdir():
        p.unlink()
    time.sleep(1.5)
    lines = len(caplog.records)
    for i in range(2):  # the images come back: the camera recovers on its next retry
        Image.fromarray(frame(40)).save(cam / f"{i}.png")
    deadline = time.monotonic() + 3
    frames = door.frames
    while door.frames == frames and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    door.close()
    assert lines < 40, [r.getMessage() for r in caplog.records][:40]  # the issue: 359,803 lines in 5 s
    assert any("no images left" in r.getMessage() or "can be read" in r.getMessage() for r in caplog.records)
    assert door.frames > frames  # it came back
