"""Where an export folder appears: checks before, atomic publication after, and its human report.

Shared by every exporter (:mod:`toolkit.export.api`, :mod:`toolkit.export.hands`): each writes into a staging
folder next to ``out`` and publishes it with one rename, so the folder is complete or absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from toolkit.errors import ToolkitError


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ToolkitError(f"{out}: already exists; choose another --out or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"{out}: exists and is not a folder; choose another --out")


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
