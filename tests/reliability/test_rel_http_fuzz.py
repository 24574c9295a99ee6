"""Schemathesis fuzzes every operation of the OpenAPI spec, valid and invalid inputs, against a server whose
door loop runs with a gpiozero relay on a mock pin: no 5xx, every 4xx a JSON error, and the relay never moves
(the fuzzer does not know the unlock token)."""

from __future__ import annotations

import threading

import httpx
import pytest
import schemathesis
from door_support import SAD, GuardedServer, folder_camera, make_export, mock_pins
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from toolkit.runtime.actuator import GpioActuator
from toolkit.runtime.camera import FolderSource
from toolkit.runtime.core.config import DoorConfig, ModelConfig, PolicyConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.door import DoorLoop
from toolkit.runtime.server import create_app

EXAMPLES = 12  # per operation and pass


@pytest.fixture(scope="module")
def fuzzed_door(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    holder = ModelHolder(ModelConfig(make_export(tmp / "tiny")))
    camera = FolderSource(folder_camera(tmp / "cam", [SAD, SAD + 5, SAD + 10]), loop=True)
    with mock_pins() as pins:
        relay = GpioActuator(17)
        config = DoorConfig(camera="cam", policy=PolicyConfig(k=1, n=1, stale_seconds=5), fps=20)
        loop = DoorLoop(holder, camera, config, relay)
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        thread.start()
        # A token is configured so the unlock route runs its real checks (random tokens must get 401/429).
        app = create_app(holder, ServeConfig(max_body_bytes=1 << 20), door=loop, token="t0ken-not-guessable")
        try:
            with GuardedServer(app) as live:
                yield live, pins.pin(17), loop
        finally:
            stop.set()
            thread.join(timeout=5)
            loop.close()


def errors_are_json(ctx, response, case) -> None:
    """Every 4xx says what is wrong in a JSON ``error`` field."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], body


# schemathesis' pytest plugin (schema.parametrize) reads a private pytest attribute that pytest 9
# removed, so the operations are driven through their hypothesis strategies directly.
def test_whole_spec_never_5xx_and_never_moves_the_door(fuzzed_door, capsys):
    live, pin, loop = fuzzed_door
    assert httpx.get(f"{live.url}/v2/health/ready").status_code == 200  # the door loop is deciding
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12  # every route of the API, including /door/open and /metrics
    cases: dict[str, int] = {}
    statuses: dict[int, int] = {}
    served = {"name": "tiny", "version": "1"}
    passes = [(mode, pinned) for pinned in (False, True) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    for mode, pinned in passes:
        # Free path parameters mostly name models that do not exist (404); pinned ones reach the real handlers.
        kind = f"{mode.value}{', served model' if pinned else ''}"
        for operation in operations:
            names = {p.name for p in operation.path_parameters}
            if pinned and not names:
                continue
            fixed = {k: v for k, v in served.items() if k in names} if pinned else None

            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def fuzz(case) -> None:
                response = case.call_and_validate(checks=[not_a_server_error, errors_are_json], timeout=10)
                cases[kind] = cases.get(kind, 0) + 1  # noqa: B023 (fuzz runs within this iteration)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

            try:
                fuzz()
            except Unsatisfiable:  # negative mode: an operation without parameters has nothing to break
                assert mode == GenerationMode.NEGATIVE  # e.g. a free string path parameter has no invalid value
    total = sum(cases.values())
    with capsys.disabled():
        print(
            f"\nschemathesis: {total} generated cases over {len(operations)} operations "
            f"({', '.join(f'{k} {n}' for k, n in cases.items())}), status counts {dict(sorted(statuses.items()))}"
        )
    assert cases["positive"] >= len(operations) * 5 and cases["negative"] >= 20
    assert cases["positive, served model"] >= 20 and cases["negative, served model"] >= 20  # infer bodies, mostly
    assert not [s for s in statuses if s >= 500]
    assert {200, 400, 401, 404} <= set(statuses)  # the fuzzer reached the real handlers, not only the router
    # Still answering, still deciding, and the relay never energised.
    assert httpx.get(f"{live.url}/v2/health/live").status_code == 200
    assert loop.ready()[0] is True
    assert [s.state for s in pin.states] == [False] and not pin.state
