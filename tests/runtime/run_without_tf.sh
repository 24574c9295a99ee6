#!/usr/bin/env bash
# Run tests/runtime (and the door runtime's reliability tests, tests/reliability/test_rel_{http,door}_*)
# in a venv WITHOUT the `train` extra, proving the door runtime installs and works with no TensorFlow
# (what `pip install 'toolkit[door]'` gives a Raspberry Pi), plus the test tools.
#
#   tests/runtime/run_without_tf.sh [pytest args...]
#
# The venv (default .venv/notf, inside the ignored .venv folder; override with NOTF_VENV) is built
# once and rebuilt when pyproject.toml changes. pip's wheel cache is used, so rebuilds are quick.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${NOTF_VENV:-$ROOT/.venv/notf}
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.installed-stamp

if [ ! -x "$VENV/bin/python" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # base (numpy, onnxruntime, pillow, typer) + door extras + test tools; never `train`.
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[door,dev]"
  touch "$STAMP"
fi

if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('tensorflow') else 1)"; then
  echo "error: tensorflow is importable in $VENV; this venv must not have the train extra" >&2
  exit 1
fi

cd "$ROOT"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/runtime tests/reliability/test_rel_http_*.py \
  tests/reliability/test_rel_door_*.py "$@"
