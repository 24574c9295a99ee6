# Two entry points: `make demo` (the main job on built-in data) and `make test` (the whole suite).
# Both create .venv when missing and install the project with its extras from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test lint install clean bench-door pi-check pi-clean audit selftest wheel

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# The distribution was called `toolkit` before (PyPI's `toolkit` is another project): drop that record, so
	@# that door-camera-toolkit alone provides the package and the command.
	$(PY) -m pip uninstall --quiet --yes toolkit 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[train,door,dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: photos (built-in synthetic faces) -> HappyModel -> ONNX + TFLite, float and int8,
# validated and benchmarked -> runs/demo/happy with its report. Re-running skips unchanged steps.
# It writes under runs/ only (gitignored): the committed exported/happy stays as it is.
demo: $(STAMP)
	$(VENV)/bin/toolkit pipeline run pipelines/happy.toml

# Lint (make lint), the whole suite, then tests/runtime again in a venv without TensorFlow (what a Pi installs).
test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)
	PYTHON=$(PYTHON) tests/runtime/run_without_tf.sh

# ruff, then the import contracts in pyproject.toml (layers, no cycles, a TensorFlow-free runtime).
lint: $(STAMP)
	$(VENV)/bin/ruff check toolkit tests benchmarks
	$(VENV)/bin/lint-imports

# Known vulnerabilities in the installed packages (pip-audit). It needs a vulnerability database on the
# network (PyPI's JSON API or OSV), so it is not part of `make test`; exit 3 and "NOT AUDITED" when none answers.
audit: $(STAMP)
	$(PY) -m benchmarks.audit

# The long reliability runs (SIGKILL + resume, full disks, fuzzing, damaged model files) with their figures.
selftest: $(STAMP)
	$(PY) -m benchmarks.selftest

# Door latency and /predict overhead (what a user runs on the Pi), then 8, 32 and 64 clients for 60 s each
# (then again with the door loop in the server) against the committed demo export, then the door's fault
# drill. About 8 minutes.
bench-door: $(STAMP)
	$(VENV)/bin/toolkit door bench --model exported/happy --threads 1
	$(PY) -m benchmarks.door_load --model exported/happy --threads 1 --clients 8,32,64 --seconds 60 --with-door
	$(PY) -m benchmarks.door_faults --model exported/happy

# The sdist and the wheel (dist/), then the wheel's size and a summary of its files; fails if either holds
# anything but the package, its data and its metadata. The wheel is what a Pi owner copies over and installs
# with `pip install './door_camera_toolkit-VERSION-py3-none-any.whl[door]'`. Builds in isolation (setuptools
# from the package index).
wheel: $(STAMP)
	rm -rf dist && mkdir dist
	$(PY) -m build --outdir dist . >dist/build.log 2>&1 \
	  || { tail -n 20 dist/build.log; echo "error: the build failed; log: dist/build.log" >&2; exit 1; }
	$(PY) -m benchmarks.wheel dist/*.whl dist/*.tar.gz

# The door runtime in an emulated arm64 Raspberry Pi OS-like root (qemu): install, tests, demo model vs x86.
# It installs the project's wheel with [door], built from the working tree as `make wheel` builds it.
# Needs root and network to the Debian mirror and the package index; minutes, so not part of `make test`.
pi-check: $(STAMP)
	PYTHON=$(PY) tests/pi/pi_check.sh

pi-clean:
	tests/pi/pi_check.sh --clean

clean:
	rm -rf $(VENV) build dist *.egg-info
