"""Door snapshots to review: full frames with their decision, under a size cap, relabelled into an image folder.

Every frame that opened the door is kept, and one frame of the others every ``every`` seconds, as a JPEG of the
whole frame (so a later detector can redo the crop) with a JSON sidecar: time, probability, decision, votes,
reason and the face box. When the folder's snapshots exceed the cap, the oldest are dropped (an SD card wears
out and fills up). Relabelling moves a snapshot into ``labelled/<label>/``, the layout ``toolkit finetune --data``
reads; relabelled photos are the household's data and never count against the cap.

Openings come first: over the cap, or on a full disk, the oldest routine samples go before any opening, and an
opening that finds no room evicts samples until it fits (the door's event log asks for room the same way, via
:meth:`SnapshotStore.make_room`). A full disk is logged once when it fills and once when it has room again.
Links are never followed: a link in the folder is neither listed, served nor moved.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.errors import ToolkitError

log = logging.getLogger("toolkit.runtime")

# Names the store writes, and the only names it serves or moves: no path ever comes from a client as is.
NAME = re.compile(r"^\d{8}-\d{6}-\d{3}(-\d+)?-(opened|sample)\.jpg$")
REVIEWED = ".reviewed.jsonl"  # hidden: an image folder loader ignores dot files
JPEG_QUALITY = 90
SUMMARY = ("time", "probability", "decision", "opened", "votes", "reason", "box")  # what the page lists


def crop_box(frame: np.ndarray, crop: np.ndarray | None) -> tuple[int, int, int, int] | None:
    """Where ``crop`` lies in ``frame`` as (x0, y0, x1, y1) pixels, or None when it is not a view into it.

    The face croppers return a slice of the frame, so its place is read from the memory offset instead of
    running the detector a second time for the box.
    """
    if crop is None or crop is frame or not np.shares_memory(frame, crop) or crop.ndim != 3:
        return None
    offset = crop.__array_interface__["data"][0] - frame.__array_interface__["data"][0]
    y0, rest = divmod(offset, frame.strides[0])
    x0 = rest // frame.strides[1]
    return int(x0), int(y0), int(x0 + crop.shape[1]), int(y0 + crop.shape[0])


class SnapshotStore:
    """The snapshot folder. Thread-safe: the door loop saves, the HTTP threads list and relabel.

    Args:
        folder: where snapshots go (created).
        cap_bytes: the snapshots' total size above which the oldest are dropped.
        every: seconds between two kept frames that did not open the door; 0 keeps only openings.
        labelled: the image folder relabelled snapshots go to; None = ``folder/labelled``.
        clock: monotonic seconds (the sampling interval); ``wall`` names the files.

    Raises:
        ToolkitError: a folder cannot be created.
    """

    def __init__(self, folder: str | Path, cap_bytes: int, every: float = 10.0, labelled: str | Path | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.labelled = Path(labelled) if labelled is not None else self.folder / "labelled"
        self.cap_bytes, self.every, self.clock, self.wall = cap_bytes, every, clock, wall
        self._last_sample = float("-inf")
        self._lock = threading.RLock()  # relabel holds it while path() takes it again
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolkitError(f"{exc.filename}: cannot write there ({exc.strerror}); fix --snapshots") from exc
        # name -> (bytes of jpg + sidecar, the sidecar's summary), oldest first: the cap is kept and the page
        # listed without reading the folder per frame or per request.
        self._kept: OrderedDict[str, tuple[int, dict]] = OrderedDict(
            (p.name, (self._size(p), _summary(p.with_suffix(".json")))) for p in sorted(self._names())
        )
        self.total = sum(size for size, _ in self._kept.values())
        self.dropped = 0
        self.version = 0  # bumped on every change of what is kept: the page's listing is cached per version
        self.full = False  # the last write failed for want of room (logged once per change)
        self.lost = 0  # frames not kept for want of room

    def _names(self):
        return (p for p in self.folder.iterdir() if NAME.match(p.name) and _regular(p))

    @staticmethod
    def _size(jpg: Path) -> int:
        size = 0
        for path in (jpg, jpg.with_suffix(".json")):
            try:
                size += path.stat().st_size
            except OSError:
                pass
        return size

    # --- the door loop's side ---------------------------------------------------------------------
    def observe(self, event: dict, frame: np.ndarray | None, box: tuple | None) -> str | None:
        """Keep this frame if it opened the door or the sampling interval has passed; returns the name kept."""
        if frame is None:
            return None
        now = self.clock()
        if not event.get("opened"):
            if self.every <= 0 or now - self._last_sample < self.every:
                return None
            self._last_sample = now
        return self.save(frame, event, box)

    def save(self, frame: np.ndarray, event: dict, box: tuple | None) -> str | None:
        """Write the frame and its sidecar (each atomically), then drop the oldest over the cap."""
        wall = self.wall()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(wall)) + f"-{int(wall * 1000) % 1000:03d}"
        kind = "opened" if event.get("opened") else "sample"
        name, n = f"{stamp}-{kind}.jpg", 0
        while (self.folder / name).exists():  # two frames in one millisecond (or a clock set back)
            n += 1
            name = f"{stamp}-{n}-{kind}.jpg"
        jpg = self.folder / name
        sidecar = {**event, "box": list(box) if box else None, "width": frame.shape[1], "height": frame.shape[0]}
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=JPEG_QUALITY)
        data, meta = buf.getvalue(), json.dumps(sidecar).encode()
        with self._lock:  # room first, then the files: the folder never holds more than the cap, even briefly
            self._drop_oldest(self.cap_bytes - len(data) - len(meta))
        opened = kind == "opened"
        for attempt in range(2):
            try:
                _atomic(jpg, data)
                _atomic(jpg.with_suffix(".json"), meta)
                break
            except OSError as exc:  # a full disk must not stop the door
                jpg.unlink(missing_ok=True)
                # An opening evicts routine samples and tries once more; a sample just waits for room.
                if not opened or attempt or not self.make_room(2 * (len(data) + len(meta))):
                    self._note_full(exc)
                    return None
        if self.full:
            self.full = False
            log.warning("snapshots %s: writing again (%d frames were not kept meanwhile)", self.folder, self.lost)
        with self._lock:
            size = self._size(jpg)
            self._kept[name] = (size, {k: sidecar.get(k) for k in SUMMARY})
            self.total += size
            self.version += 1
        return name

    def _note_full(self, exc: OSError) -> None:
        self.lost += 1
        if not self.full:  # once per change of state, not once per frame
            self.full = True
            log.warning("snapshots %s: not saved (%s); frames are not kept until there is room again, and openings "
                        "evict routine samples", self.folder, exc.strerror or exc)  # fmt: skip

    def make_room(self, nbytes: int) -> int:
        """Drop the oldest routine samples (never an opening) until ``nbytes`` are freed; returns bytes freed.

        For an opening's records on a full disk: its snapshot here, its event-log line (the door calls this).
        """
        freed = 0
        with self._lock:
            for old in [n for n in self._kept if n.endswith("-sample.jpg")]:
                if freed >= nbytes:
                    break
                freed += self._drop(old)
            if freed:
                self.version += 1
        return freed

    def _drop_oldest(self, budget: int) -> None:
        """Drop the oldest snapshots until they take at most ``budget`` bytes: routine samples before openings."""
        for openings in (False, True):
            for old in [n for n in self._kept if n.endswith("-opened.jpg") == openings]:
                if self.total <= budget:
                    return
                self._drop(old)

    def _drop(self, name: str) -> int:
        size, _ = self._kept.pop(name)
        self.total -= size
        self.dropped += 1
        for path in (self.folder / name, (self.folder / name).with_suffix(".json")):
            path.unlink(missing_ok=True)
        return size

    # --- the page's side --------------------------------------------------------------------------
    def list(self, limit: int = 100) -> list[dict]:
        """The newest ``limit`` snapshots with their sidecars, newest first."""
        with self._lock:
            newest = list(self._kept.items())[-limit:][::-1]
        return [{"name": name, **summary} for name, (_, summary) in newest]

    def path(self, name: str) -> Path:
        """The file of a snapshot the store holds.

        Raises:
            KeyError: not a snapshot name, or no longer kept.
        """
        if not NAME.match(name):
            raise KeyError(name)
        with self._lock:
            if name not in self._kept or not _regular(self.folder / name):  # a link put in its place: refused
                raise KeyError(name)
        return self.folder / name

    def relabel(self, name: str, label: str, labels: tuple[str, ...]) -> Path:
        """Move a snapshot to ``labelled/<label>/`` (its sidecar is appended to ``labelled/.reviewed.jsonl``).

        Raises:
            KeyError: no such snapshot.
            ValueError: the label is not one of ``labels``.
        """
        if label not in labels:
            raise ValueError(f"label {label!r} is not one of the model's labels {list(labels)}")
        with self._lock:
            jpg = self.path(name)
            target = self.labelled / label / name
            target.parent.mkdir(parents=True, exist_ok=True)
            sidecar = jpg.with_suffix(".json")
            try:
                meta = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                meta = {}
            target = _move_no_clobber(jpg, target)
            with open(self.labelled / REVIEWED, "a") as f:
                f.write(json.dumps({"name": name, "label": label, "file": target.name, **meta}) + "\n")
            sidecar.unlink(missing_ok=True)
            size, _ = self._kept.pop(name)
            self.total -= size
            self.version += 1
        log.info("snapshot %s labelled %r: %s", name, label, target)
        return target


def _summary(sidecar: Path) -> dict:
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        meta = {}  # a sidecar lost to a crash: the photo is still worth a review
    return {k: meta.get(k) for k in SUMMARY}


def _regular(path: Path) -> bool:
    """A regular file, not a link to one (nor a device or a folder)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _move_no_clobber(src: Path, target: Path) -> Path:
    """Move ``src`` to ``target``, or to ``stem-1.jpg``, ``stem-2.jpg``... if taken: never over a labelled photo.

    ``os.link`` fails if the name exists, so two relabels racing for one name cannot both win it.
    """
    candidate, n = target, 0
    while True:
        try:
            os.link(src, candidate, follow_symlinks=False)
            break
        except FileExistsError:
            n += 1
            candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
    src.unlink()
    return candidate


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # O_NOFOLLOW | O_EXCL: a link planted at the temporary name is not written through.
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
