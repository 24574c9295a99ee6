"""Adapted heads: versions of an export's head, fitted on the door from owner-labelled snapshots.

The export folder is read-only under the shipped unit, so versions live in the door's state directory::

    STATE/adapt/current.json          {"version": "v3"} or {"version": null} (the export's own head)
    STATE/adapt/versions/v3/head.json     the linear head on the chain's features (kernel, bias)
    STATE/adapt/versions/v3/version.json  parent sha256, labelled counts, CV estimate, threshold and its source

Every write is atomic (a temporary file, then rename), so the door reads the old pointer or the new one, never
half of either. A version is served only by the export it was fitted on: its ``parent.sha256`` must be the
export's head file's sha256.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.logreg import LinearHead
from toolkit.inference.manifest import sha256_file

SCHEMA = "toolkit.adapt/1"
ADAPT_DIR = "adapt"
CURRENT = "current.json"
VERSION_FILE = "version.json"
HEAD_JSON = "head.json"
THRESHOLD_SOURCE = "owner-labelled snapshots"
_ID = re.compile(r"^v[0-9]{1,6}$")


def adapt_root(state: str | Path) -> Path:
    return Path(state) / ADAPT_DIR


def write_atomic(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(state: str | Path) -> Path:
    """The adapt folder under ``state``, created if need be.

    Raises:
        ToolkitError: one line when this user cannot write there (e.g. the CLI run as another user than the door).
    """
    root = adapt_root(state)
    try:
        (root / "versions").mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        user = _user()
        raise ToolkitError(f"{root}: cannot write the door's state there as user {user} ({exc.strerror}); run the "
                           "command as the door's user (e.g. sudo -u toolkit-door ...) or pass --state DIR") from None
    return root


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def version_ids(state: str | Path) -> list[str]:
    """The versions under ``state``, oldest first."""
    folder = adapt_root(state) / "versions"
    if not folder.is_dir():
        return []
    ids = [p.name for p in folder.iterdir() if _ID.match(p.name) and (p / VERSION_FILE).is_file()]
    return sorted(ids, key=lambda v: int(v[1:]))


def next_id(state: str | Path) -> str:
    folder = adapt_root(state) / "versions"
    used = [int(p.name[1:]) for p in folder.iterdir() if _ID.match(p.name)] if folder.is_dir() else []
    return f"v{max(used, default=0) + 1}"


def version_dir(state: str | Path, vid: str) -> Path:
    """The folder of version ``vid``.

    Raises:
        ToolkitError: not a version name (``v`` and a number) or no such version.
    """
    if not _ID.match(str(vid)):
        raise ToolkitError(f"{vid!r}: not a version name (v1, v2, ...); list them with 'toolkit door versions'")
    path = adapt_root(state) / "versions" / vid
    if not (path / VERSION_FILE).is_file():
        raise ToolkitError(f"{path}: no such version; list them with 'toolkit door versions --state {state}'")
    return path


def read_version(folder: str | Path) -> dict:
    """A version's record, checked: schema, head file present with its sha256.

    Raises:
        ToolkitError: unreadable or tampered record or head.
    """
    folder = Path(folder)
    path = folder / VERSION_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolkitError(f"{path}: unreadable version record ({exc}); delete the version") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ToolkitError(f"{path}: field 'schema' must be {SCHEMA!r}; delete the version")
    head = folder / HEAD_JSON
    if not head.is_file() or sha256_file(head) != record.get("head_sha256"):
        raise ToolkitError(f"{head}: missing or changed since the version was written (sha256); delete the version")
    return record


def read_head(folder: str | Path) -> LinearHead:
    """A version's linear head (its record already checked by :func:`read_version`)."""
    path = Path(folder) / HEAD_JSON
    try:
        return LinearHead.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ToolkitError(f"{path}: not a linear head ({exc}); delete the version") from None


def write_version(state: str | Path, head: LinearHead, record: dict) -> Path:
    """Write a new version folder (atomically: staged, then renamed) and return it; ``record`` gains its id,
    schema and the head's sha256. The current version does not change."""
    root = check_writable(state)
    vid = next_id(state)
    staging = Path(tempfile.mkdtemp(dir=root / "versions", prefix=f".{vid}.partial-"))
    try:
        (staging / HEAD_JSON).write_text(json.dumps(head.to_dict()) + "\n")
        record = {"schema": SCHEMA, "id": vid, **record, "head_file": HEAD_JSON,
                  "head_sha256": sha256_file(staging / HEAD_JSON)}
        (staging / VERSION_FILE).write_text(json.dumps(record, indent=2) + "\n")
        staging.rename(root / "versions" / vid)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root / "versions" / vid


def current(state: str | Path | None) -> str | None:
    """The chosen version's id, or None (the export's own head; also when nothing was ever chosen)."""
    if state is None:
        return None
    path = adapt_root(state) / CURRENT
    try:
        vid = json.loads(path.read_text()).get("version")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as exc:
        raise ToolkitError(f"{path}: unreadable ({exc}); choose a version again with 'toolkit door rollback'") from None
    return vid if isinstance(vid, str) and _ID.match(vid) else None


def choose(state: str | Path, vid: str | None, history: bool = True) -> None:
    """Make ``vid`` (None: the export's own head) the version the door serves; the previous one is remembered."""
    root = check_writable(state)
    if vid is not None:
        version_dir(state, vid)
    before = _pointer(root)
    chain = list(before.get("history", []))
    if history and before.get("version", None) != vid:
        chain.append(before.get("version"))
    write_atomic(root / CURRENT, json.dumps({"version": vid, "history": chain[-50:]}) + "\n")


def rollback(state: str | Path) -> str | None:
    """Go back to the version served before the current one (skipping deleted ones); returns the new choice.

    Raises:
        ToolkitError: nothing to go back to.
    """
    root = check_writable(state)
    pointer = _pointer(root)
    chain = list(pointer.get("history", []))
    existing = set(version_ids(state))
    while chain:
        vid = chain.pop()
        if vid is None or vid in existing:
            if vid == pointer.get("version"):
                continue
            write_atomic(root / CURRENT, json.dumps({"version": vid, "history": chain}) + "\n")
            return vid
    if pointer.get("version") is not None:  # no history left: the export's own head
        write_atomic(root / CURRENT, json.dumps({"version": None, "history": []}) + "\n")
        return None
    raise ToolkitError(f"{root}: the export's own head already serves; there is nothing to roll back")


def delete(state: str | Path, vid: str) -> None:
    """Delete a version; deleting the serving one first rolls back.

    Raises:
        ToolkitError: no such version, or the state folder is not writable.
    """
    path = version_dir(state, vid)
    check_writable(state)
    if current(state) == vid:
        rollback(state)
    shutil.rmtree(path)


def _pointer(root: Path) -> dict:
    try:
        d = json.loads((root / CURRENT).read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def list_versions(state: str | Path | None) -> list[dict]:
    """Every version's record (newest first) with ``current`` set on the serving one; unreadable ones flagged."""
    if state is None:
        return []
    chosen = current(state)
    out = []
    for vid in reversed(version_ids(state)):
        try:
            record = read_version(adapt_root(state) / "versions" / vid)
        except ToolkitError as exc:
            record = {"id": vid, "error": str(exc)}
        out.append({**record, "current": vid == chosen})
    return out


def head_for(folder: Path, record: dict, parent_sha256: str, labels: tuple, width: int) -> LinearHead:
    """The version's head after checking it belongs to this export (parent sha256, labels, output width).

    Raises:
        ToolkitError: fitted on another export's head, other labels, or another number of outputs.
    """
    where = Path(folder) / VERSION_FILE
    parent = record.get("parent", {})
    if parent.get("sha256") != parent_sha256:
        raise ToolkitError(f"{where}: adapted from head {str(parent.get('sha256'))[:12]}..., not this export's "
                           f"{parent_sha256[:12]}...; adapt again or roll back")
    if tuple(record.get("labels", ())) != tuple(labels):
        raise ToolkitError(f"{where}: labels {record.get('labels')} differ from the export's {list(labels)}")
    head = read_head(folder)
    if head.kernel.shape[1] != width:
        raise ToolkitError(f"{where}: the head has {head.kernel.shape[1]} outputs, the export {width}")
    return head


def as_float32(head: LinearHead) -> LinearHead:
    """The head in float32, as an ONNX head would run (the door's arithmetic)."""
    return LinearHead(np.asarray(head.kernel, np.float32), np.asarray(head.bias, np.float32))
