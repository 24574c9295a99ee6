"""``toolkit door serve/run/collect`` options come from the runtime configs' ``setting()`` declarations; the few
the commands add themselves are listed here, and the configs they build are what the flags say."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import typer

from toolkit import settings as S
from toolkit.cli import app, main
from toolkit.runtime.core.config import (
    CollectConfig,
    DoorConfig,
    LogRotation,
    ModelConfig,
    MqttConfig,
    PolicyConfig,
    ServeConfig,
)

CONFIGS = {"serve": (ModelConfig, ServeConfig, PolicyConfig),
           "run": (ModelConfig, PolicyConfig, DoorConfig, ServeConfig, MqttConfig, LogRotation),
           "collect": (CollectConfig,)}
# The only options no setting declares: the door's --quiet (also uvicorn's level), run's --active-low (inverts
# DoorConfig.active_high) and --serve; collect's --quiet is OutputOptions'.
OWN = {"serve": {"quiet"}, "run": {"quiet", "active_low", "with_api"}, "collect": {"quiet"}}
SERVE_SKIPS = {"k", "n", "open_seconds", "cooldown_seconds", "stale_seconds", "open_on"}  # serve moves no door


def _params(name: str) -> dict:
    door = typer.main.get_command(app).commands["door"]
    return {p.name: p for p in door.commands[name].params}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_door_option_is_a_declared_setting_or_one_of_the_commands_own(name, capsys):
    params, derived = _params(name), set()
    for cls in CONFIGS[name]:
        for f in dataclasses.fields(cls):
            m = S.meta(f)
            if not m["cli"] or (name == "serve" and f.name in SERVE_SKIPS):
                assert f.name not in params, f.name
                continue
            p = params[f.name]
            assert p.opts == [S.flag_of(cls, f.name)] and p.help.startswith(m["help"]), f.name
            default = S.default_of(f)
            assert p.required if default is dataclasses.MISSING else p.default == S.as_text(default), f.name
            derived.add(f.name)
            for alias in m["aliases"]:  # --k, --n, --face: accepted, hidden
                (old,) = [p for p in params.values() if p.opts == [alias]]
                assert old.hidden
                derived.add(old.name)
    assert set(params) - derived == OWN[name]
    assert main(["door", name, "-h"]) == 0
    shown = capsys.readouterr().out
    for p in params.values():
        # a whole flag: the hidden "--n" must not be found inside "--no-track"
        assert bool(re.search(re.escape(p.opts[0]) + r"(?![\w-])", shown)) != p.hidden, p.opts


@pytest.mark.parametrize("argv, line", [
    (["run", "--camera", "0", "--votes", "0"], "error: --votes: must be a positive integer, got 0"),
    (["run", "--camera", "0", "--port", "70000"], "error: --port: must be in [1, 65535], got 70000"),
    (["run", "--camera", "0", "--k", "4", "--window", "3"],
     "error: --votes: must be at most --window: k-of-n needs 1 <= k <= n, got k=4 n=3"),
    (["run", "--camera", "0", "--open-seconds", "0.05"], "error: --open-seconds: must be >= 0.1, got 0.05"),
    (["serve", "--threshold", "1.5"], "error: --threshold: must be in [0, 1], got 1.5"),
])  # fmt: skip
def test_a_bad_door_value_is_one_line_naming_the_flag(tmp_path, argv, line, capsys):
    assert main(["door", *argv, "--model", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines()[-1:] == [line]  # after --k's deprecation line, if any


def test_run_builds_the_configs_the_flags_say(tmp_path, monkeypatch):
    from toolkit.runtime import service

    got = {}
    monkeypatch.setattr(service, "run_door", lambda model, door, api, mqtt, auth: got.update(
        model=model, door=door, api=api, mqtt=mqtt, auth=auth) or 0)  # fmt: skip
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/state:{tmp_path}/other")
    assert main(["door", "run", "--model", "m", "--camera", "c", "--votes", "2", "--window", "4", "--cooldown",
                 "0", "--active-low", "--quiet", "--event-log-backups", "1", "--detector", "haar"]) == 0
    door, api = got["door"], got["auth"]
    assert got["model"].folder == Path("m") and got["api"] is None and api.log_level == "warning"
    assert (door.policy.k, door.policy.n, door.policy.cooldown_seconds) == (2, 4, 0.0) and not door.active_high
    assert door.snapshots == tmp_path / "state" / "snapshots" and door.event_log_rotation.event_log_backups == 1
    assert door.face == "haar" and door.camera == "c"
    assert main(["door", "run", "--model", "m", "--camera", "c", "--serve", "--snapshots", "s"]) == 0
    assert got["api"] == got["auth"] and got["api"].log_level == "info" and got["door"].active_high
    assert got["door"].snapshots == Path("s")
