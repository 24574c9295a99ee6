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
    model = dataclasses.replace(model, state=model.state or _state_dir())
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
    """Run the door: camera -> (face) -> model -> k-of-n -> relay. Fails closed on any doubt.

    The committed door model is exported/happy-face (it finds the face itself: detector + face mesh + expression
    CNN + head, one detector pass per frame); exported/happy is the expression-only baseline (its BlazeFace crop).
    """
    from toolkit.runtime.service import run_door

    _logging(quiet)
    door = dataclasses.replace(door, policy=policy, active_high=not active_low, event_log_rotation=rotation,
                               snapshots=door.snapshots or _state_snapshots())  # fmt: skip
    model = dataclasses.replace(model, state=model.state or _state_dir())
    # The token and the unlock limits serve the MQTT unlock command too, with or without the API.
    api = dataclasses.replace(api, log_level="warning" if quiet else "info")
    frames = run_door(model, door, api if with_api else None, mqtt=mqtt, auth=api)
    typer.echo(f"door loop stopped after {frames} frames; relay locked")


def _state_dir() -> Path | None:
    """$STATE_DIRECTORY (its first entry) under a systemd unit with ``StateDirectory=``, else None."""
    import os

    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else None


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
    threads: int = typer.Option(1, "--threads", min=1, help="Threads per model (onnxruntime or LiteRT)."),
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


_STATE = typer.Option(None, "--state", help="The door's state folder (default: $STATE_DIRECTORY under systemd).")


def _need_state(state: Path | None) -> Path:
    from toolkit.errors import ToolkitError

    state = state or _state_dir()
    if state is None:
        raise ToolkitError("--state: name the door's state folder (the one 'toolkit door run --state' uses; under "
                           "systemd /var/lib/toolkit-door)")
    return state


@door_app.command("adapt")
def adapt(
    model: Path = typer.Option(..., "--model", help="The export folder the door runs (a chain ending in head.onnx)."),
    data: Path = typer.Option(..., "--data", help="Labelled photos: a subfolder per label (the page's labelled/)."),
    state: Path = _STATE,
    force: bool = typer.Option(False, "--force", help="Adapt despite too few photos, a lopsided class or a CV "
                               "estimate below the current head's."),
    prior: str = typer.Option("auto", "--prior", help="Pull the fit toward the shipped head: auto (CV chooses), "
                              "yes or no."),
    votes: int = typer.Option(3, "--votes", min=1, help="The door's k (for the per-visit FAR bound)."),
    window: int = typer.Option(5, "--window", min=1, help="The door's n of k-of-n."),
    switch: bool = typer.Option(True, "--switch/--no-switch", help="Make the new version the serving one."),
) -> None:
    """Refit the export's head on photos labelled on this camera (no TensorFlow); writes a new version."""
    from toolkit.errors import ToolkitError
    from toolkit.runtime.adapt import AdaptConfig
    from toolkit.runtime.adapt import adapt as run_adapt

    if prior not in ("auto", "yes", "no"):
        raise ToolkitError(f"--prior {prior}: choose auto, yes or no")
    run_adapt(AdaptConfig(model=model, data=data, state=_need_state(state), force=force, prior=prior, k=votes,
                          n=window, switch=switch), log=typer.echo)


@door_app.command("rollback")
def rollback(
    state: Path = _STATE,
    to: str = typer.Option(None, "--to", help="A version (v1, v2...) or 'export' (the export's own head); default: "
                           "the one served before."),
) -> None:
    """Go back to the head version served before (a running door switches within a second)."""
    from toolkit.inference import versions

    state = _need_state(state)
    if to is None:
        vid = versions.rollback(state)
    else:
        vid = None if to == "export" else to
        versions.choose(state, vid)
    typer.echo(f"serving {vid or 'the export' + chr(39) + 's own head'} (state {state})")


@door_app.command("versions")
def list_versions(
    state: Path = _STATE,
    delete: list[str] = typer.Option(None, "--delete", help="Delete this version (repeatable)."),
) -> None:
    """List the adapted head versions with their figures (the serving one marked *), or delete some."""
    from toolkit.inference import versions

    state = _need_state(state)
    for vid in delete or ():
        versions.delete(state, vid)
        typer.echo(f"deleted {vid}")
    for v in versions.list_versions(state):
        if "error" in v:
            typer.echo(f"  {v['id']}  unreadable: {v['error']}")
            continue
        cv = v["cv"]
        t = "-" if v.get("threshold") is None else f"{v['threshold']:.4f}"
        typer.echo(f"{'*' if v['current'] else ' '} {v['id']}  {v['created']}  n={cv['n']} "
                   f"{' '.join(f'{k}={n}' for k, n in v['counts'].items())}  CV {cv['accuracy']:.3f} "
                   f"[{cv['interval_95'][0]:.3f}, {cv['interval_95'][1]:.3f}]  threshold {t}  "
                   f"FAR<={v.get('far_upper_95') or 0:.3f}  ({'prior' if cv['prior'] else 'plain'}, C {cv['C']:g})")
    if versions.current(state) is None:
        typer.echo("* the export's own head serves")


@door_app.command("forget")
def forget(
    data: Path = typer.Option(..., "--data", help="The labelled folder (the page's labelled/)."),
    photo: list[str] = typer.Argument(..., help="LABEL/FILE of each labelled photo to delete."),
) -> None:
    """Delete labelled photos (they are photos of the household)."""
    from toolkit.runtime.labelled import delete_photo

    for name in photo:
        delete_photo(data, name)
        typer.echo(f"deleted {name}")
