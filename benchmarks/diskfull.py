"""A full disk during training, feature caching and export: one clear error line, earlier artifacts intact.

The disk is a small tmpfs mounted for the check when we may mount (root). Otherwise the child runs
with RLIMIT_FSIZE, so any file growing past the limit fails with EFBIG ("File too large"), which the
toolkit must report the same way. Earlier artifacts (a finished run, a cache entry, an export) sit on
the same disk and must come out byte-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import DATA, IMAGE_SIZE, child_env, run, toolkit_cmd, train_args

FILLER = ".filler"


@contextlib.contextmanager
def small_disk(size_kb: int, method: str = "auto") -> Iterator[tuple[Path, str]]:
    """A folder on a ``size_kb`` tmpfs -> (folder, "tmpfs"); else a plain temp folder and "rlimit"."""
    folder = Path(tempfile.mkdtemp(prefix="toolkit-disk-"))
    mounted = False
    if method in ("auto", "tmpfs") and os.geteuid() == 0 and shutil.which("mount"):
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        mounted = p.returncode == 0
    if method == "tmpfs" and not mounted:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError("cannot mount a tmpfs here (needs root)")
    try:
        yield folder, "tmpfs" if mounted else "rlimit"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def leave_free(folder: Path, free_kb: int) -> int:
    """Fill a tmpfs until about ``free_kb`` KB are left; returns the KB actually free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    fill = max(0, free - free_kb * 1024)
    with open(folder / FILLER, "wb") as f:
        f.truncate(0)
        block = b"\0" * (1 << 16)
        while fill > 0:
            fill -= f.write(block[: min(len(block), fill)])
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize // 1024


def fsize_limit(kb: int):
    """preexec_fn for a child whose files may not grow past ``kb`` KB (EFBIG; Python ignores SIGXFSZ)."""

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (kb * 1024, kb * 1024))

    return apply


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes: equal digests mean an untouched folder."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _verdict(result, earlier: dict[Path, str]) -> dict:
    intact = all(path.exists() and tree_digest(path) == digest for path, digest in earlier.items())
    return {"rc": result.returncode, "error": (result.error_lines or [""])[0], "error_lines": len(result.error_lines),
            "traceback": result.traceback, "earlier_intact": intact,
            "clear": result.returncode == 2 and len(result.error_lines) == 1 and not result.traceback}


def training_full(work: Path, finished_run: Path, *, free_kb: int, method: str = "auto") -> dict:
    """Train into a disk with ``free_kb`` KB left, next to a finished run that must stay as it is."""
    with small_disk(4096, method) as (disk, how):
        earlier = disk / "earlier-run"
        shutil.copytree(finished_run, earlier)
        digest = tree_digest(earlier)
        out = disk / "new-run"
        if how == "tmpfs":
            free = leave_free(disk, free_kb)
            result = run(toolkit_cmd(*train_args(out, epochs=3)))
        else:
            free = free_kb
            result = run(toolkit_cmd(*train_args(out, epochs=3)), preexec_fn=fsize_limit(free_kb))
        return {"what": "train", "method": how, "free_kb": free, **_verdict(result, {earlier: digest}),
                "left": sorted(p.name for p in out.iterdir()) if out.is_dir() else []}


def caching_full(work: Path, run_dir: Path, *, free_kb: int, method: str = "auto") -> dict:
    """Cache features into a disk with ``free_kb`` KB left, next to an earlier cache entry."""
    with small_disk(8192, method) as (disk, how):
        cache = disk / "cache"
        args = ["finetune", "happy", "--weights", str(run_dir), "--image-size", str(IMAGE_SIZE), "--cache-features",
                "--head", "keras", "--epochs", "1", "--batch-size", "16", "--patience", "0"]
        # The earlier entry: another data set's features, cached while the disk had room.
        shutil.rmtree(work / "cache-first", ignore_errors=True)
        first = run(toolkit_cmd(*args, "--data", "synthetic:happy?n=48&seed=5", "--out", str(work / "cache-first")),
                    env=child_env(TOOLKIT_CACHE=str(cache)))
        if first.returncode != 0:
            raise RuntimeError(f"caching run failed: {first.stderr[-2000:]}")
        earlier = [p for p in cache.iterdir() if not p.name.startswith(".")]
        digest = tree_digest_of(earlier)
        out = work / "cache-full-run"
        shutil.rmtree(out, ignore_errors=True)
        env = child_env(TOOLKIT_CACHE=str(cache))
        if how == "tmpfs":
            free = leave_free(disk, free_kb)
            result = run(toolkit_cmd(*args, "--data", DATA, "--out", str(out)), env=env)
        else:
            free = free_kb
            result = run(toolkit_cmd(*args, "--data", DATA, "--out", str(out)), env=env,
                         preexec_fn=fsize_limit(free_kb))
        verdict = _verdict(result, {})
        verdict["earlier_intact"] = all(p.is_dir() for p in earlier) and tree_digest_of(earlier) == digest
        return {"what": "cache", "method": how, "free_kb": free, **verdict,
                "unfinished_left": len(list(cache.glob(".tmp-*")))}


def tree_digest_of(entries: list[Path]) -> str:
    """Like :func:`tree_digest` of the folder holding ``entries``, restricted to them."""
    h = hashlib.sha256()
    for entry in sorted(entries):
        for path in sorted(p for p in entry.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(entry.parent)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def export_full(work: Path, run_dir: Path, earlier_export: Path, *, free_kb: int, method: str = "auto") -> dict:
    """Export with --overwrite onto a disk with ``free_kb`` KB left, where the earlier export must survive."""
    with small_disk(4096, method) as (disk, how):
        out = disk / "exported" / "happy"
        shutil.copytree(earlier_export, out)
        digest = tree_digest(out)
        args = ["export", str(run_dir), "--format", "onnx,tflite", "--quantize", "none", "--overwrite",
                "--out", str(out)]
        if how == "tmpfs":
            free = leave_free(disk, free_kb)
            result = run(toolkit_cmd(*args))
        else:
            free = free_kb
            result = run(toolkit_cmd(*args), preexec_fn=fsize_limit(free_kb))
        staging = sorted(p.name for p in out.parent.iterdir() if p.name.startswith("."))
        return {"what": "export", "method": how, "free_kb": free, **_verdict(result, {out: digest}),
                "staging_left": staging}
