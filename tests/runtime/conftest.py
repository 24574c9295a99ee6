"""Fixtures for the runtime tests: export folders with tiny ONNX models (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_support import make_export


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return make_export(tmp_path_factory.mktemp("exported") / "tiny")


@pytest.fixture(scope="session")
def softmax_dir(tmp_path_factory) -> Path:
    return make_export(tmp_path_factory.mktemp("exported") / "colours", kind="softmax", name="colours")
