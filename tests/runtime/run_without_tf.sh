#!/usr/bin/env bash
# Run tests/runtime (and the door runtime's reliability tests, tests/reliability/test_rel_{http,door}_*) against
# what the README installs on a Raspberry Pi: the project's wheel with the `door` extra, in a venv WITHOUT the
# `train` extra (no TensorFlow), plus the dev extra's test tools.
#
#   tests/runtime/run_without_tf.sh [pytest args...]
#
# Each run copies the working tree (git's view: tracked and new files, nothing ignored) into the venv's src/,
# builds the wheel from that copy, installs it, then deletes the copy's toolkit/: the tests import the installed
# wheel, so a module or page file the wheel lacks fails here, not on a Pi. The venv (default .venv/notf;
# NOTF_VENV overrides) gets its dependencies once and again whenever pyproject.toml changes (made afresh, so
# nothing stale stays); rebuilding and reinstalling the wheel itself takes seconds.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${NOTF_VENV:-$ROOT/.venv/notf}
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.installed-stamp
SRC=$VENV/src
DIST=$VENV/dist
PY=$VENV/bin/python

fresh=0
if [ ! -x "$PY" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
    echo "error: $VENV exists and is not a venv; remove it or set NOTF_VENV to another folder" >&2
    exit 2
  fi
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  # What building the wheel without isolation needs (build, setuptools), at the dev extra's versions.
  mapfile -t tools < <("$PY" "$ROOT/tests/pi/compare.py" requirements dev build setuptools --pyproject "$ROOT/pyproject.toml")
  "$PY" -m pip install --quiet "${tools[@]}"
  fresh=1
fi

rm -rf "$SRC" "$DIST"
mkdir -p "$SRC"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf -) | tar -xf - -C "$SRC"
if ! "$PY" -m build --wheel --no-isolation --outdir "$DIST" "$SRC" >"$VENV/build.log" 2>&1; then
  tail -n 20 "$VENV/build.log" >&2
  echo "error: building the wheel failed; log: $VENV/build.log" >&2
  exit 1
fi
WHEEL=$(ls "$DIST"/*.whl)
if [ "$fresh" = 1 ]; then
  # The README's Pi install (the wheel with [door]) plus the test tools; never `train`.
  "$PY" -m pip install --quiet "$WHEEL[door,dev]"
  touch "$STAMP"
else
  "$PY" -m pip install --quiet --no-deps --force-reinstall "$WHEEL"
fi
rm -rf "$SRC/toolkit" "$SRC/build" "$SRC"/*.egg-info

if "$PY" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('tensorflow') else 1)"; then
  echo "error: tensorflow is importable in $VENV; this venv must not have the train extra" >&2
  exit 1
fi
cd "$SRC"
"$PY" - "$VENV" <<'EOF'
import sys
from pathlib import Path

import toolkit

if not Path(toolkit.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve() / "lib"):
    sys.exit(f"error: the tests would import {toolkit.__file__}, not the wheel installed in {sys.argv[1]}")
EOF
# Tests look for ../shared/datasets beside the checkout and leave browser screenshots in test-artifacts/.
[ -d "$ROOT/../shared" ] && ln -sfn "$ROOT/../shared" "$VENV/shared"
mkdir -p "$ROOT/test-artifacts"
ln -sfn "$ROOT/test-artifacts" "$SRC/test-artifacts"
echo "run_without_tf: $(basename "$WHEEL")[door,dev] in $VENV, tests from a copy without toolkit/"
exec "$PY" -m pytest -q -p no:cacheprovider tests/runtime tests/reliability/test_rel_http_*.py \
  tests/reliability/test_rel_door_*.py "$@"
