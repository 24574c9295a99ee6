#!/bin/bash
# The arm64 half of tests/pi/pi_check.sh, run inside the emulated root (never on the host): a fresh venv,
# the wheel pi_check.sh built, installed with `[door]` as the README has a Pi owner install it (nothing
# more), no TensorFlow, versions, the README's `toolkit door bench` on that install, the runtime tests (pytest
# and onnx added; no httpx), the demo model vs x86.
set -euo pipefail
IN=/opt/pi-check
SRC=$IN/src
VENV=$IN/venv
LOGS=$IN/logs
PY=$VENV/bin/python
mkdir -p "$LOGS"
cd "$SRC"

T0=$SECONDS
step() { echo "pi-check [arm64 +$((SECONDS - T0))s]: $*"; }
run_logged() {  # run_logged LOG CMD...: quiet on success, the log's tail and one error line on failure
  local log=$LOGS/$1
  shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "error: '$*' failed; log: $log" >&2
    exit 1
  fi
}

step "fresh venv ($(python3 --version), $(uname -m))"
rm -rf "$VENV"
python3 -m venv "$VENV"

WHEEL=$(ls "$IN"/dist/*.whl)
step "pip install '$(basename "$WHEEL")[door]'"
# --no-compile: byte-compiling every installed file is minutes under emulation; imports compile what they use.
run_logged pip-door.log "$PY" -m pip install --progress-bar off --no-compile "$WHEEL[door]"
"$PY" tests/pi/compare.py no-tensorflow
# Tests must use the installed package, as a Pi would: pi_check.sh left no toolkit/ in the copied source.
[ ! -e "$SRC/toolkit" ] || { echo "error: $SRC/toolkit exists; the tests would not test the wheel" >&2; exit 1; }

step "installed versions"
"$PY" tests/pi/compare.py versions

step "toolkit door bench on the wheel's [door] install, as the README runs it on a Pi"
# Before any test tool is installed: a dev package (httpx) once hid a door command that needed it.
"$VENV/bin/toolkit" door bench --model exported/happy --threads 1 --frames 20 | tee "$LOGS/door-bench.log"
grep -q '^/predict overhead' "$LOGS/door-bench.log" || { echo "error: door bench printed no /predict overhead" >&2; exit 1; }
# The face-landmark door model: BlazeFace and the face mesh run their .tflite under LiteRT (docs/runtimes.md)
"$VENV/bin/toolkit" door bench --model exported/happy-face --threads 1 --frames 10 --no-http \
  | tee "$LOGS/door-bench-face.log"
grep -q 'face mesh litert' "$LOGS/door-bench-face.log" || { echo "error: LiteRT did not serve the face mesh" >&2; exit 1; }

step "test tools from the dev extra (pytest; onnx builds the tests' tiny models)"
# Not httpx or tritonclient: the tests run here talk HTTP with the standard library, as a door install must.
mapfile -t tools < <("$PY" tests/pi/compare.py requirements dev pytest onnx)
run_logged pip-tests.log "$PY" -m pip install --progress-bar off --no-compile "${tools[@]}"
"$PY" tests/pi/compare.py no-tensorflow

step "demo model: arm64 vs x86"
"$PY" tests/pi/compare.py check --model exported/happy --reference "$IN/x86"

step "pytest ${PI_TESTS}"
# shellcheck disable=SC2086  # PI_TESTS is a list of pytest arguments
"$VENV/bin/pytest" -q -p no:cacheprovider -o addopts="" -rs --durations=5 $PI_TESTS
step "done"
