"""Where an export folder appears: checks before, atomic publication after, and its human report.

Shared by every exporter (:mod:`toolkit.export.api`, :mod:`toolkit.export.hands`): each writes into a staging
folder next to ``out`` and publishes it with one rename, so the folder is complete or absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from toolkit.errors import ToolkitError, disk_full_error


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ToolkitError(f"{out}: already exists; choose another --out or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"{out}: exists and is not a folder; choose another --out")


@contextmanager
def staged(out: Path) -> Iterator[tuple[Path, Path]]:
    """``(staging, workdir)`` for writing an export that :func:`_publish` then moves to ``out`` in one rename.

    What a killed export left is cleaned first (:func:`clean_stale`). On any failure the staging folder goes and
    ``out`` stays as it was (a full disk becomes one line saying so); the work dir always goes.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-{os.getpid()}-"))
    workdir = Path(tempfile.mkdtemp(prefix=f"toolkit-export-{os.getpid()}-"))
    try:
        yield staging, workdir
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        full = disk_full_error(exc, str(out.parent), "nothing was written and an earlier export there is "
                               "untouched; free some space and export again") if isinstance(exc, Exception) else None
        if full is not None:
            raise full from exc
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def clean_stale(out: Path) -> None:
    """Undo what a killed export left: its staging folders and work dirs; a swapped-out old export comes back.

    Each temporary name carries its writer's process id, so folders of an export still running elsewhere
    are left alone.
    """
    for prefix in (f".{out.name}.partial-", f".{out.name}.old-"):
        for path in sorted(out.parent.glob(prefix + "*")):
            if _alive(path.name[len(prefix):]):
                continue
            if prefix.endswith(".old-") and not out.exists():  # killed between the two renames of _publish
                os.replace(path, out)
            else:
                shutil.rmtree(path, ignore_errors=True)
    for path in Path(tempfile.gettempdir()).glob("toolkit-export-*"):
        pid = path.name[len("toolkit-export-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(pid):  # a name without a writer's id is not ours to judge
            shutil.rmtree(path, ignore_errors=True)


def _alive(suffix: str) -> bool:
    """Is the process whose id starts ``suffix`` ("1234" or "1234-x1y2") still running?"""
    digits = suffix.split("-", 1)[0]
    if not digits.isdigit():
        return False
    try:
        os.kill(int(digits), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def _publish(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished staging folder into place; an old folder is swapped out, then removed."""
    os.chmod(staging, 0o755)
    if out.exists() and overwrite:
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def report_markdown(manifest) -> str:
    """A human summary of the validation numbers (the manifest is the machine-readable copy)."""
    lines = [
        f"# Export {manifest.name}: {manifest.model}",
        "",
        f"Labels: {', '.join(manifest.labels)} ({manifest.output_kind}); serve: `{manifest.serve}`",
        "",
        "| file | format | quantization | KB | accuracy % | float % | agreement % | max abs dp "
        "| threshold | FAR | FRR |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in manifest.files.items():
        v = e.validation

        def fmt(x, spec=".3f"):
            return "" if x is None else format(x, spec)

        lines.append(
            f"| {name} | {e.format} | {e.quantization} | {e.bytes / 1024:.1f} | {v['accuracy']:.2f} | "
            f"{v['float_accuracy']:.2f} | {v['agreement']:.2f} | {v['max_abs_dprob']:.4f} | "
            f"{fmt(e.threshold, '.4f')} | {fmt(e.far)} | {fmt(e.frr)} |"
        )
    return "\n".join(lines) + "\n"
