"""``toolkit door ...``: serve an export over HTTP, run the camera door, collect photos, benchmark.

Only typer and the runtime's config dataclasses are imported here; the runtime (onnxruntime, fastapi, cv2,
gpiozero, paho) is imported inside the commands so ``toolkit door --help`` answers at once. The options of
``serve``, ``run`` and ``collect`` are derived from those configs (:mod:`toolkit.settings`); a few are the
command's own: ``--quiet``, ``--active-low``, ``--serve``, and ``bench``'s (a repeatable ``--model``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from toolkit.cli import app
from toolkit.cli.options import config_command
from toolkit.runtime.core.config import (
    CollectConfig,
    DoorConfig,
    LogRotation,
    ModelConfig,
    MqttConfig,
    PolicyConfig,
    ServeConfig,
)

door_app = typer.Typer(help="Serve an exported model and run the door camera (TensorFlow-free).", no_args_is_help=True)
app.add_typer(door_app, name="door")

# The door's own --quiet (not OutputOptions'): it also quiets uvicorn and the runtime's loggers.
_QUIET = typer.Option(False, "--quiet", help="Log warnings only.")
# serve moves no door: of the policy only --threshold applies (its predictions' labels)
_DOOR_ONLY = ("k", "n", "open_seconds", "cooldown_seconds", "stale_seconds", "open_on")


def _logging(quiet: bool) -> None:
    import logging

    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(message)s")
    for name in ("toolkit.runtime", "uvicorn", "uvicorn.error"):  # the root logger may be set up already
        logging.getLogger(name).setLevel(level)


@config_command(door_app, ModelConfig, ServeConfig, PolicyConfig, name="serve", skip=_DOOR_ONLY)
def serve(model: ModelConfig, api: ServeConfig, policy: PolicyConfig, quiet: bool = _QUIET) -> None:
    """Serve the model over HTTP: KServe v2 inference, /predict, /metrics. Never moves a door."""
    from toolkit.runtime.service import serve_model

    _logging(quiet)
    serve_model(model, dataclasses.replace(api, log_level="warning" if quiet else "info"), policy.threshold)


@config_command(door_app, ModelConfig, PolicyConfig, DoorConfig, ServeConfig, MqttConfig, LogRotation, name="run")
def run(
    model: ModelConfig,
    policy: PolicyConfig,
    door: DoorConfig,
    api: ServeConfig,
    mqtt: MqttConfig,
    rotation: LogRotation,
    active_low: bool = typer.Option(False, "--active-low", help="The relay board energises on a low pin."),
    with_api: bool = typer.Option(False, "--serve", help="Also serve the HTTP API (with /door/open)."),
    quiet: bool = _QUIET,
) -> None:
    """Run the door: camera -> (face) -> model -> k-of-n -> relay. Fails closed on any doubt."""
    from toolkit.runtime.service import run_door

    _logging(quiet)
    door = dataclasses.replace(door, policy=policy, active_high=not active_low, event_log_rotation=rotation,
                               snapshots=door.snapshots or _state_snapshots())  # fmt: skip
    # The token and the unlock limits serve the MQTT unlock command too, with or without the API.
    api = dataclasses.replace(api, log_level="warning" if quiet else "info")
    frames = run_door(model, door, api if with_api else None, mqtt=mqtt, auth=api)
    typer.echo(f"door loop stopped after {frames} frames; relay locked")


def _state_snapshots() -> Path | None:
    """$STATE_DIRECTORY/snapshots under a systemd unit with ``StateDirectory=`` (its first entry), else None."""
    import os

    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / "snapshots" if state else None


@door_app.command("token")
def token() -> None:
    """Print a fresh unlock token (256 random bits): (umask 077; toolkit door token > /etc/toolkit-door/token)."""
    from toolkit.runtime.security import new_token

    typer.echo(new_token())


@config_command(door_app, CollectConfig, name="collect")
def collect(config: CollectConfig) -> None:
    """Capture labelled photos from the door camera into an image folder for training."""
    from toolkit.runtime.collect import collect as run_collect

    saved = run_collect(config, on_save=lambda p: typer.echo(p))
    typer.echo(f"saved {len(saved)} photos in {config.out / config.label}")


@door_app.command("bench")
def bench(
    model: list[Path] = typer.Option(
        ..., "--model", help="Export folder, or FOLDER/FILE.onnx for one of its files; repeat to compare."
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="onnxruntime intra-op threads."),
    frames: int = typer.Option(200, "--frames", min=1, help="Frames (and /predict requests) per measurement."),
    http: bool = typer.Option(True, "--http/--no-http", help="Measure /predict overhead over the Predictor."),
    n: int = typer.Option(None, "--n", min=1, hidden=True),  # old spelling of --frames
) -> None:
    """Print frame->decision latency p50/p99 and the /predict overhead on this machine."""
    from toolkit.cli.options import deprecated
    from toolkit.runtime.bench import run_bench
    from toolkit.runtime.core.config import BenchConfig

    frames = deprecated("--n", "--frames", n, frames)
    run_bench(BenchConfig(tuple(model), threads, frames=frames, http=http), out=typer.echo)
