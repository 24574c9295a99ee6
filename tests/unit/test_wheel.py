"""The wheel a Pi installs holds the package and its data, nothing from the checkout; install hints name the wheel.

The build runs on a copy of the sources (no build/ or egg-info left in the checkout), without isolation so it
works offline: `build` and setuptools come from the dev extra. `python -m build` makes the sdist first and the
wheel from it, so a file the sdist forgot is missing from the wheel too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from benchmarks import wheel as wheelinfo
from toolkit import __version__

ROOT = Path(__file__).resolve().parents[2]
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "THIRD_PARTY_NOTICES.md")
DIST = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(the copied source folder, the wheel, the sdist), built once for this module."""
    pytest.importorskip("build", reason="the dev extra's `build` is not installed")
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "toolkit", src / "toolkit", ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
    # A model file under inference/assets/ must ship whether or not the checkout has one yet.
    assets = src / "toolkit" / "inference" / "assets"
    assets.mkdir(exist_ok=True)
    (assets / "probe_model.onnx").write_bytes(b"\x08\x07probe")
    (assets / "LICENSE.probe").write_text("probe licence\n")
    out = src.parent / "dist"
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return src, wheels[0], sdists[0]


def test_the_wheel_holds_every_package_file_and_nothing_else(built):
    src, whl, _ = built
    files = wheelinfo.wheel_files(whl)
    assert wheelinfo.strays(list(files)) == []
    shipped = {n for n in files if n.startswith("toolkit/")}
    sources = {p.relative_to(src).as_posix() for p in (src / "toolkit").rglob("*") if p.is_file()}
    assert shipped == sources, (sorted(sources - shipped), sorted(shipped - sources))
    # The data the door cannot run without, named so a too-narrow glob fails here and not on a Pi.
    for name in ("toolkit/runtime/static/index.html", "toolkit/runtime/static/page.js",
                 "toolkit/inference/assets/probe_model.onnx", "toolkit/inference/assets/LICENSE.probe"):
        assert name in shipped
    assert not any(n.split("/")[0] in {"tests", "benchmarks", "exported", "pipelines", "docs"} for n in files)


def test_the_wheel_names_the_distribution_version_and_licences(built):
    _, whl, _ = built
    assert whl.name == f"{DIST.replace('-', '_')}-{__version__}-py3-none-any.whl"
    meta = wheelinfo.wheel_metadata(whl)
    assert meta["Name"] == [DIST] and meta["Version"] == [__version__]
    assert meta["License-Expression"] == ["Apache-2.0"]
    assert set(meta["License-File"]) == {"LICENSE", "NOTICE", "THIRD_PARTY_NOTICES.md"}
    assert {"door", "train", "dev"} <= set(meta["Provides-Extra"])
    files = wheelinfo.wheel_files(whl)
    assert f"{DIST.replace('-', '_')}-{__version__}.dist-info/licenses/THIRD_PARTY_NOTICES.md" in files
    entry = next(n for n in files if n.endswith("entry_points.txt"))
    assert entry.endswith(".dist-info/entry_points.txt")


def test_the_sdist_holds_the_sources_and_licences_only(built):
    _, _, sdist = built
    files = wheelinfo.sdist_files(sdist)
    assert wheelinfo.strays(list(files), sdist=True) == []
    assert {"LICENSE", "THIRD_PARTY_NOTICES.md", "pyproject.toml", "toolkit/runtime/static/index.html"} <= set(files)


def test_the_summary_prints_the_size_and_flags_strays(built, capsys, tmp_path):
    _, whl, _ = built
    assert wheelinfo.main([str(whl)]) == 0
    out = capsys.readouterr().out
    assert f"{whl.name}: {whl.stat().st_size:,} bytes" in out and "toolkit/runtime/static/" in out
    names = ["toolkit/cli/__init__.py", "tests/unit/test_x.py", "benchmarks/door_load.py", "exported/happy/model.onnx",
             "toolkit/__pycache__/errors.cpython-311.pyc", "x.dist-info/METADATA", "conftest.py"]
    assert wheelinfo.strays(names) == names[1:5] + ["conftest.py"]


# `pip install 'X[extra]'` (or -e / a path / a wheel file): X must be this distribution, the checkout or a wheel.
INSTALL = re.compile(r"pip install [^'\"\n\[]*?['\"]?([^'\"\s\[]+)\[([\w,]+)\]")


def _install_hints() -> list[tuple[str, str, str]]:
    texts = [*(ROOT / "toolkit").rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "deploy").iterdir(), ROOT / "Makefile", *(ROOT / "tests" / "runtime").glob("*.sh"),
             *(ROOT / "tests" / "pi").glob("*.sh")]
    return [(p.relative_to(ROOT).as_posix(), m.group(1), m.group(2))
            for p in texts if p.is_file() for m in INSTALL.finditer(p.read_text())]


def test_every_install_hint_names_this_distribution_the_checkout_or_a_wheel():
    hints = _install_hints()
    assert any(target == DIST for _, target, _ in hints)  # the messages were found at all
    wrong = [h for h in hints if h[1] != DIST and h[1] != "." and not h[1].endswith(".whl")
             and not h[1].startswith(("$", "/"))]
    assert wrong == []
    bare = [p for p in (ROOT / "toolkit").rglob("*.py") if re.search(r"pip install '?toolkit\b", p.read_text())]
    assert bare == []


def test_the_tf_free_run_and_the_pi_check_install_the_wheel_the_readme_installs_on_a_pi():
    readme = [m for m in INSTALL.finditer((ROOT / "README.md").read_text()) if m.group(1).endswith(".whl")]
    assert readme and {m.group(2) for m in readme} == {"door"}, "the README's Pi install: a wheel with [door]"
    script = (ROOT / "tests" / "runtime" / "run_without_tf.sh").read_text()
    assert re.search(r'pip install [^\n]*"\$WHEEL\[door,dev\]"', script), "run_without_tf.sh installs the wheel"
    assert "pip install --quiet -e" not in script
    in_root = (ROOT / "tests" / "pi" / "in_root.sh").read_text()
    assert re.search(r'pip install [^\n]*"\$WHEEL\[door\]"', in_root), "the Pi check installs the wheel"
