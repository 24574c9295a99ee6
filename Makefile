# Two entry points: `make demo` (the main job on built-in data) and `make test` (the whole suite).
# Both create .venv when missing and install the project with its extras from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,door,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/toolkit train happy --data synthetic:happy --epochs 20 --out runs/demo-happy
	$(VENV)/bin/toolkit evaluate runs/demo-happy

test: $(STAMP)
	$(VENV)/bin/ruff check toolkit tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check toolkit tests
	$(VENV)/bin/ruff format --check toolkit tests

clean:
	rm -rf $(VENV) build *.egg-info
