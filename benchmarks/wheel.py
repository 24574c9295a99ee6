"""What a built wheel (and sdist) holds: its size, a file-list summary, and anything that does not belong in it.

``python -m benchmarks.wheel dist/*.whl [dist/*.tar.gz]`` (``make wheel`` builds both, then runs this): exit 0
when every archive holds the package, its data and its metadata only; 1, with one line per stray file, when
one holds tests, benchmarks, data sets, export folders or anything else outside ``toolkit/``.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from collections import defaultdict
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

PACKAGE = "toolkit"
# Files that may sit at an sdist's top level beside the package (the build's inputs and the licences).
SDIST_TOP = {"PKG-INFO", "pyproject.toml", "README.md", "LICENSE", "NOTICE", "THIRD_PARTY_NOTICES.md", "setup.cfg"}


def wheel_files(path: Path) -> dict[str, int]:
    """Every file in a wheel (a zip) with its uncompressed size in bytes."""
    with zipfile.ZipFile(path) as z:
        return {i.filename: i.file_size for i in z.infolist() if not i.is_dir()}


def sdist_files(path: Path) -> dict[str, int]:
    """Every file in an sdist (a .tar.gz), its top folder (NAME-VERSION/) stripped, with its size in bytes."""
    with tarfile.open(path) as t:
        return {m.name.split("/", 1)[1]: m.size for m in t.getmembers() if m.isfile() and "/" in m.name}


def wheel_metadata(path: Path) -> dict[str, list[str]]:
    """The wheel's METADATA headers, each name with all its values (Provides-Extra, License-File, ...)."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(z.read(name).decode())
    out: dict[str, list[str]] = defaultdict(list)
    for key, value in headers.items():
        out[key].append(value)
    return dict(out)


def strays(names: list[str], sdist: bool = False) -> list[str]:
    """Files that are neither the package (with its data) nor metadata: what must not ship.

    A wheel may hold ``toolkit/...`` and ``*.dist-info/...``; an sdist also ``*.egg-info/...`` and the build's
    inputs at its top (``SDIST_TOP``). Compiled caches are strays anywhere.
    """
    bad = []
    for name in names:
        parts = PurePosixPath(name).parts
        if "__pycache__" in parts or name.endswith((".pyc", ".pyo")):
            bad.append(name)
        elif parts[0] == PACKAGE and len(parts) > 1:
            continue
        elif not sdist and len(parts) > 1 and parts[0].endswith(".dist-info"):
            continue
        elif sdist and (name in SDIST_TOP or (len(parts) > 1 and parts[0].endswith(".egg-info"))):
            continue
        else:
            bad.append(name)
    return bad


def summary(files: dict[str, int]) -> list[str]:
    """Lines grouping the package's files by folder (count, bytes, which kinds), data files listed one by one."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    kinds: dict[str, set[str]] = defaultdict(set)
    data = []
    for name, size in sorted(files.items()):
        folder = str(PurePosixPath(name).parent)
        groups[folder][0] += 1
        groups[folder][1] += size
        suffix = PurePosixPath(name).suffix or PurePosixPath(name).name
        kinds[folder].add(suffix)
        if folder.startswith(PACKAGE) and suffix != ".py":
            data.append(f"    data  {name}  {size:,} B")
    lines = []
    for folder, (n, size) in groups.items():
        label = f"{folder}/" if folder != "." else "(top level)"
        lines.append(f"  {label:<46} {n:>4} files {size / 1024:>9.1f} KiB  {' '.join(sorted(kinds[folder]))}")
    return lines + data


def report(path: Path) -> tuple[list[str], list[str]]:
    """The lines ``make wheel`` prints for one archive, and its strays."""
    sdist = path.name.endswith(".tar.gz")
    files = sdist_files(path) if sdist else wheel_files(path)
    size = path.stat().st_size
    lines = [f"{path.name}: {size:,} bytes ({size / 1024:.1f} KiB) on disk, {len(files)} files, "
             f"{sum(files.values()) / 1024:.1f} KiB unpacked"]
    if not sdist:
        meta = wheel_metadata(path)
        lines.append("  metadata: " + ", ".join(
            f"{key} {' / '.join(meta.get(key, ['-']))}"
            for key in ("Name", "Version", "License-Expression", "License-File", "Provides-Extra")))
    lines += summary(files)
    return lines, strays(list(files), sdist=sdist)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m benchmarks.wheel DIST.whl [DIST.tar.gz ...]", file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        if not path.is_file():
            print(f"error: {path}: no such file; build it first with `make wheel`", file=sys.stderr)
            return 2
        lines, bad = report(path)
        print("\n".join(lines))
        for name in bad:
            print(f"error: {path.name} holds {name}: only the package, its data and its metadata belong in it",
                  file=sys.stderr)
        failed |= bool(bad)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
