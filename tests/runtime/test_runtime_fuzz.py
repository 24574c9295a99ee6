"""Schemathesis fuzzes the API against its own OpenAPI spec: no 5xx, every 4xx a JSON error."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from runtime_support import LiveServer
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from toolkit.runtime.config import ModelConfig, ServeConfig
from toolkit.runtime.holder import ModelHolder
from toolkit.runtime.server import create_app


@pytest.fixture(scope="module")
def fuzz_server(export_dir):
    # A token is configured so the unlock route runs its real checks (random tokens must get 401).
    app = create_app(ModelHolder(ModelConfig(export_dir)), ServeConfig(max_body_bytes=1 << 20), token="t0ken")
    with LiveServer(app) as live:
        yield live


def errors_are_json(ctx, response, case) -> None:
    """Every 4xx says what is wrong in a JSON ``error`` field."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], body


# schemathesis' pytest plugin (schema.parametrize) reads a private pytest attribute that pytest 9
# removed, so the operations are driven through their hypothesis strategies directly.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_never_5xx(fuzz_server, mode):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    fuzzed = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case) -> None:
            case.call_and_validate(checks=[not_a_server_error, errors_are_json], timeout=10)

        try:
            fuzz()
        except Unsatisfiable:  # negative mode: an operation without parameters has nothing to break
            assert mode == GenerationMode.NEGATIVE
        else:
            fuzzed += 1
    assert fuzzed >= (len(operations) if mode == GenerationMode.POSITIVE else 3)
    # Still answering after the fuzzing.
    assert httpx.get(f"{fuzz_server.url}/v2/health/live").status_code == 200
