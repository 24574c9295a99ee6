"""The README's tour writes only under runs/ (gitignored), and its real-photo pipeline run has a folder of its own.

Issue 23, defect 10: the tour wrote happy.png and exported/my-happy/ into the checkout, and its last command
silently replaced `make demo`'s runs/demo/happy.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _tour() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## A short tour\n+```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("toolkit ")]


def _written(argv: list[str]) -> list[str]:
    out = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--out", "--grid")]
    out += [a.split("=", 1)[1] for a in argv if a.startswith("export.out=")]
    return out


def test_the_tour_writes_only_under_runs():
    commands = _tour()
    assert len(commands) >= 8
    written = [path for argv in commands for path in _written(argv)]
    assert written and all(path.startswith("runs/") for path in written), written
    pipeline = next(argv for argv in commands if argv[1:3] == ["pipeline", "run"])
    default_out = tomllib.loads((ROOT / pipeline[3]).read_text())["export"]["out"]
    [own] = _written(pipeline)
    assert own != default_out and not own.startswith(default_out)  # make demo's folder stays make demo's
    exported = next(path for argv in commands if argv[1] == "export" for path in _written(argv))
    for argv in commands:  # what reads the export reads the one the tour wrote
        if argv[1] in ("benchmark",) or argv[1:3] == ["door", "serve"]:
            assert exported in argv, argv
