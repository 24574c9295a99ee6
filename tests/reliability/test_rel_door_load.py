"""A seconds-long smoke run of the load benchmark (``python -m benchmarks.door_load --with-door``); the real
one (8, 32, 64 clients x 60 s) prints figures and is not a test. Also: bounded inference threads."""

from __future__ import annotations

import os
import re

import anyio
import pytest
from door_support import make_export

from benchmarks.door_load import main
from toolkit.runtime.core.config import ModelConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.server import create_app, inference_threads


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("load") / "tiny")


def test_bench_with_door_smoke(export, capsys):
    argv = ["--model", str(export), "--clients", "2,4", "--seconds", "0.5", "--with-door", "--door-fps", "20"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    loads = re.findall(r"^load  (\d+) clients x 0.5 s: (\d+) requests .* 5xx (\d+), dropped (\d+), .*RSS", out, re.M)
    assert [(c, x, d) for c, _, x, d in loads] == [("2", "0", "0"), ("4", "0", "0")] * 2, out
    assert all(int(n) > 0 for _, n, _, _ in loads)
    assert out.count("memory  ") == 2 and "GROWING" not in out
    door = re.findall(r"^door  (.*): (\d+) decisions \(([\d.]+)/s\), frame->decision p50 ([\d.]+) ms", out, re.M)
    assert [d[0] for d in door] == ["alone for 0.5 s (no HTTP load)", "under 2 clients", "under 4 clients"], out
    assert all(int(d[1]) >= 4 for d in door)  # the door kept deciding (20 fps) while the API was loaded
    assert out.startswith("machine: ") and out.count("machine: ") == 2 and "door decision p99: alone" in out


@pytest.mark.parametrize("flags, message", [
    (["--clients", "8,x"], "argument --clients: '8,x': give a count or a comma-separated list like 8,32,64"),
    (["--clients", "0"], "argument --clients: '0': give positive counts"),
    (["--seconds", "0"], "argument --seconds: '0': must be more than 0"),
])  # fmt: skip
def test_load_rejects_bad_flags_in_one_line(export, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(export), *flags])
    err = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {message}"), err


def test_inference_runs_in_a_bounded_number_of_threads(export, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert inference_threads(ServeConfig(), with_door=False) == 4
    assert inference_threads(ServeConfig(), with_door=True) == 3  # a core left for the door loop
    assert inference_threads(ServeConfig(inference_threads=2), with_door=True) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert inference_threads(ServeConfig(), with_door=True) == 1

    # Sixteen concurrent /predict calls never run more than two models at once.
    holder = ModelHolder(ModelConfig(export))
    real = holder.predictor
    running, peak = [0], [0]

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def predict(self, data, name=None):
            import time

            running[0] += 1
            peak[0] = max(peak[0], running[0])
            time.sleep(0.02)
            running[0] -= 1
            return real.predict(data, name)

    holder._predictor = Counting()
    app = create_app(holder, ServeConfig(inference_threads=2))
    assert app.state.inference_threads == 2
    import httpx
    from door_support import jpeg

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            async with anyio.create_task_group() as tg:
                codes: list[int] = []

                async def one() -> None:
                    codes.append((await c.post("/predict", content=jpeg(220))).status_code)

                for _ in range(16):
                    tg.start_soon(one)
            return codes

    assert anyio.run(burst) == [200] * 16
    assert peak[0] == 2


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread priorities are a Linux feature")
def test_beside_a_door_inference_threads_run_nicer(export):
    import threading

    import httpx
    from door_support import jpeg

    holder = ModelHolder(ModelConfig(export))
    real = holder.predictor
    seen: list[int] = []

    class Probe:
        def __getattr__(self, name):
            return getattr(real, name)

        def predict(self, data, name=None):
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return real.predict(data, name)

    class Door:
        listeners: list = []

        def ready(self):
            return True, "ready"

    holder._predictor = Probe()
    base = os.getpriority(os.PRIO_PROCESS, 0)

    async def one(app) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            return (await c.post("/predict", content=jpeg(220))).status_code

    assert anyio.run(one, create_app(holder, ServeConfig(inference_threads=1))) == 200
    assert anyio.run(one, create_app(holder, ServeConfig(inference_threads=1), door=Door())) == 200
    assert seen == [base, min(19, base + 10)]  # without a door: untouched; beside one: 10 nicer than the process
