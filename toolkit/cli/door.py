"""``toolkit door ...``: serve an export over HTTP, run the camera door, collect photos, benchmark.

Only typer and the runtime's config dataclasses are imported here; the runtime (onnxruntime, fastapi, cv2,
gpiozero, paho) is imported inside the commands so ``toolkit door --help`` answers at once. The hand-written
options predate :mod:`toolkit.settings`; the MQTT and event-log rotation ones are derived from their configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from toolkit.cli import app
from toolkit.cli.options import config_command
from toolkit.runtime.config import LogRotation, MqttConfig

door_app = typer.Typer(help="Serve an exported model and run the door camera (TensorFlow-free).", no_args_is_help=True)
app.add_typer(door_app, name="door")

Detector = Literal["none", "haar", "blazeface"]
_DETECTOR = typer.Option(
    None, "--detector", help="Crop the largest face first (no face, no vote). Default: the export's detector, if any."
)
_MODEL = typer.Option(..., "--model", help="Export folder with manifest.json (written by 'toolkit export').")
_FILE = typer.Option(None, "--file", help="ONNX file in the folder (default: the manifest's 'serve' file).")
_THREADS = typer.Option(1, "--threads", min=1, help="onnxruntime intra-op threads.")
_HOST = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the API to the network.")
_PORT = typer.Option(8000, "--port", min=1, max=65535, help="TCP port of the API.")
_TOKEN_FILE = typer.Option(None, "--token-file", help="File holding the manual-unlock bearer token.")
_TOKEN_ENV = typer.Option("TOOLKIT_DOOR_TOKEN", "--token-env", help="Env var holding the token (if no file).")
_WATCH = typer.Option(0.0, "--watch", min=0, help="Poll the model folder every S seconds and hot-reload it.")
_MAX_BODY = typer.Option(8 << 20, "--max-body-bytes", min=1, help="Largest request body accepted (413 above).")
_MAX_BATCH = typer.Option(64, "--max-batch", min=1, help="Largest batch a v2 infer request may send.")
_MAX_PIXELS = typer.Option(25_000_000, "--max-pixels", min=1, help="Largest decoded image accepted.")
_THRESHOLD = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Override the manifest's threshold.")
_QUIET = typer.Option(False, "--quiet", help="Log warnings only.")
_REQUEST_TIMEOUT = typer.Option(
    30.0, "--request-timeout", min=0.1, help="Seconds for a request's headers, then its body (slow clients cut off)."
)
_UNLOCK_FAILURES = typer.Option(
    5, "--unlock-max-failures", min=1, help="Wrong /door/open tokens per client per window before 429."
)
_UNLOCK_WINDOW = typer.Option(60.0, "--unlock-window", min=0.1, help="Window (s) for --unlock-max-failures.")
_INFERENCE_NICE = typer.Option(
    10, "--inference-nice", min=0, max=19, help="Beside a door, API inference threads run this much nicer (Linux)."
)
_INFERENCE_THREADS = typer.Option(
    0,
    "--inference-threads",
    min=0,
    help="Requests running the model at once; others queue (0 = cores, cores - 1 beside a door).",
)

_SNAPSHOTS = typer.Option(
    None, "--snapshots", help="Keep the frames that opened the door, and a sample of the others, here for review on "
    "the page. Default: $STATE_DIRECTORY/snapshots when systemd sets it, else off."
)
_SNAPSHOT_CAP = typer.Option(200.0, "--snapshot-cap-mb", min=1.0, help="Drop the oldest snapshots above this many MB.")
_SNAPSHOT_EVERY = typer.Option(
    10.0, "--snapshot-every", min=0.0, help="Seconds between kept frames that did not open the door (0: openings only)."
)
_LABELLED = typer.Option(
    None, "--labelled", help="Image folder (a subfolder per label) that snapshots relabelled on the page go to, for "
    "'toolkit finetune --data'. Default: SNAPSHOTS/labelled."
)

def _logging(quiet: bool) -> None:
    import logging

    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(message)s")
    for name in ("toolkit.runtime", "uvicorn", "uvicorn.error"):  # the root logger may be set up already
        logging.getLogger(name).setLevel(level)


def _serve_config(host, port, max_body, max_batch, token_file, token_env, quiet, timeout, failures, window, workers,
                  nice):  # fmt: skip
    from toolkit.runtime.config import ServeConfig

    return ServeConfig(
        host=host,
        port=port,
        max_body_bytes=max_body,
        max_batch=max_batch,
        token_file=token_file,
        token_env=token_env,
        log_level="warning" if quiet else "info",
        request_timeout_seconds=timeout,
        unlock_max_failures=failures,
        unlock_window_seconds=window,
        inference_threads=workers,
        inference_nice=nice,
    )


@door_app.command("serve")
def serve(
    model: Path = _MODEL,
    file: str = _FILE,
    host: str = _HOST,
    port: int = _PORT,
    threads: int = _THREADS,
    max_body_bytes: int = _MAX_BODY,
    max_batch: int = _MAX_BATCH,
    max_pixels: int = _MAX_PIXELS,
    token_file: Path = _TOKEN_FILE,
    token_env: str = _TOKEN_ENV,
    watch: float = _WATCH,
    threshold: float = _THRESHOLD,
    request_timeout: float = _REQUEST_TIMEOUT,
    unlock_max_failures: int = _UNLOCK_FAILURES,
    unlock_window: float = _UNLOCK_WINDOW,
    inference_threads: int = _INFERENCE_THREADS,
    inference_nice: int = _INFERENCE_NICE,
    quiet: bool = _QUIET,
) -> None:
    """Serve the model over HTTP: KServe v2 inference, /predict, /metrics. Never moves a door."""
    from toolkit.runtime.config import ModelConfig
    from toolkit.runtime.service import serve_model

    _logging(quiet)
    api = _serve_config(host, port, max_body_bytes, max_batch, token_file, token_env, quiet, request_timeout,
                        unlock_max_failures, unlock_window, inference_threads, inference_nice)  # fmt: skip
    serve_model(ModelConfig(model, file, threads, max_pixels, watch), api, threshold)


@config_command(door_app, MqttConfig, LogRotation, name="run")
def run(
    mqtt: MqttConfig,
    rotation: LogRotation,
    model: Path = _MODEL,
    camera: str = typer.Option(..., "--camera", help="Device index, RTSP/HTTP URL, video, 'picamera2' or a folder."),
    file: str = _FILE,
    threads: int = _THREADS,
    relay: Literal["log", "gpio"] = typer.Option("log", "--relay", help="'log' (dry run) or 'gpio'."),
    relay_pin: int = typer.Option(17, "--relay-pin", help="BCM pin of the relay driver."),
    active_low: bool = typer.Option(False, "--active-low", help="The relay board energises on a low pin."),
    detector: Detector = _DETECTOR,
    votes: int = typer.Option(3, "--votes", min=1, help="Frames at or above the threshold needed to open..."),
    window: int = typer.Option(5, "--window", min=1, help="...among the last WINDOW frames."),
    face: Detector = typer.Option(None, "--face", hidden=True),  # old spelling of --detector
    k: int = typer.Option(None, "--k", min=1, hidden=True),  # old spelling of --votes
    n: int = typer.Option(None, "--n", min=1, hidden=True),  # old spelling of --window
    threshold: float = _THRESHOLD,
    open_on: str = typer.Option(None, "--open-on", help="Open on this label of a multi-class export (e.g. the hand "
                                "sign 5): a frame votes when P(label) >= --threshold (default 0.5); no hand, no vote."),
    open_seconds: float = typer.Option(3.0, "--open-seconds", min=0.1, help="How long the door stays unlocked."),
    cooldown: float = typer.Option(5.0, "--cooldown", min=0.0, help="Locked time after each opening."),
    stale: float = typer.Option(2.0, "--stale", min=0.1, help="No frame for this long locks the door."),
    fps: float = typer.Option(0.0, "--fps", min=0.0, help="Cap the frame rate (0 = as fast as frames come)."),
    event_log: Path = typer.Option(None, "--event-log", help="Append one JSON line per frame here."),
    snapshots: Path = _SNAPSHOTS,
    snapshot_cap_mb: float = _SNAPSHOT_CAP,
    snapshot_every: float = _SNAPSHOT_EVERY,
    labelled: Path = _LABELLED,
    max_frames: int = typer.Option(0, "--max-frames", min=0, help="Stop after this many frames (0 = never)."),
    reconnect_min: float = typer.Option(0.5, "--reconnect-min", min=0.0, help="First camera reconnect delay (s)."),
    reconnect_max: float = typer.Option(30.0, "--reconnect-max", min=0.0, help="Longest reconnect delay (s)."),
    loop: bool = typer.Option(False, "--loop", help="With a folder camera, start again at the end."),
    with_api: bool = typer.Option(False, "--serve", help="Also serve the HTTP API (with /door/open)."),
    host: str = _HOST,
    port: int = _PORT,
    max_body_bytes: int = _MAX_BODY,
    max_batch: int = _MAX_BATCH,
    max_pixels: int = _MAX_PIXELS,
    token_file: Path = _TOKEN_FILE,
    token_env: str = _TOKEN_ENV,
    watch: float = _WATCH,
    request_timeout: float = _REQUEST_TIMEOUT,
    unlock_max_failures: int = _UNLOCK_FAILURES,
    unlock_window: float = _UNLOCK_WINDOW,
    inference_threads: int = _INFERENCE_THREADS,
    inference_nice: int = _INFERENCE_NICE,
    quiet: bool = _QUIET,
) -> None:
    """Run the door: camera -> (face) -> model -> k-of-n -> relay. Fails closed on any doubt."""
    from toolkit.cli.options import deprecated
    from toolkit.errors import ToolkitError
    from toolkit.runtime.config import DoorConfig, ModelConfig, PolicyConfig
    from toolkit.runtime.service import run_door

    _logging(quiet)
    votes, window = deprecated("--k", "--votes", k, votes), deprecated("--n", "--window", n, window)
    detector = deprecated("--face", "--detector", face, detector)
    try:
        policy = PolicyConfig(votes, window, threshold, open_seconds, cooldown, stale, open_on)
    except ValueError as exc:
        raise ToolkitError(f"--votes/--window/--open-seconds: {exc}") from exc
    door = DoorConfig(
        camera=camera,
        policy=policy,
        relay=relay,
        relay_pin=relay_pin,
        active_high=not active_low,
        face=detector,
        fps=fps,
        event_log=event_log,
        event_log_rotation=rotation,
        snapshots=snapshots or _state_snapshots(),
        snapshot_cap_mb=snapshot_cap_mb,
        snapshot_every=snapshot_every,
        labelled=labelled,
        max_frames=max_frames,
        reconnect_min_seconds=reconnect_min,
        reconnect_max_seconds=reconnect_max,
        loop=loop,
    )
    # The token and the unlock limits serve the MQTT unlock command too, with or without the API.
    api = _serve_config(host, port, max_body_bytes, max_batch, token_file, token_env, quiet, request_timeout,
                        unlock_max_failures, unlock_window, inference_threads, inference_nice)  # fmt: skip
    model_config = ModelConfig(model, file, threads, max_pixels, watch)
    frames = run_door(model_config, door, api if with_api else None, mqtt=mqtt, auth=api)
    typer.echo(f"door loop stopped after {frames} frames; relay locked")


def _state_snapshots() -> Path | None:
    """$STATE_DIRECTORY/snapshots under a systemd unit with ``StateDirectory=`` (its first entry), else None."""
    import os

    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / "snapshots" if state else None


@door_app.command("collect")
def collect(
    camera: str = typer.Option(..., "--camera", help="Same sources as 'door run'."),
    label: str = typer.Option(..., "--label", help="Class of the photos, e.g. smile or no_smile."),
    out: Path = typer.Option(..., "--out", help="Dataset folder; photos go to OUT/LABEL/."),
    every: float = typer.Option(1.0, "--every", min=0.0, help="Seconds between photos."),
    count: int = typer.Option(0, "--count", min=0, help="Stop after this many photos (0 = until Ctrl-C)."),
    detector: Detector = _DETECTOR,
    face: Detector = typer.Option(None, "--face", hidden=True),  # old spelling of --detector
) -> None:
    """Capture labelled photos from the door camera into an image folder for training."""
    from toolkit.cli.options import deprecated
    from toolkit.runtime.collect import collect as run_collect
    from toolkit.runtime.config import CollectConfig

    detector = deprecated("--face", "--detector", face, detector) or "none"
    config = CollectConfig(camera, label, out, every, count, detector)
    saved = run_collect(config, on_save=lambda p: typer.echo(p))
    typer.echo(f"saved {len(saved)} photos in {out / label}")


@door_app.command("bench")
def bench(
    model: list[Path] = typer.Option(
        ..., "--model", help="Export folder, or FOLDER/FILE.onnx for one of its files; repeat to compare."
    ),
    threads: int = _THREADS,
    frames: int = typer.Option(200, "--frames", min=1, help="Frames (and /predict requests) per measurement."),
    http: bool = typer.Option(True, "--http/--no-http", help="Measure /predict overhead over the Predictor."),
    n: int = typer.Option(None, "--n", min=1, hidden=True),  # old spelling of --frames
) -> None:
    """Print frame->decision latency p50/p99 and the /predict overhead on this machine."""
    from toolkit.cli.options import deprecated
    from toolkit.runtime.bench import run_bench
    from toolkit.runtime.config import BenchConfig

    frames = deprecated("--n", "--frames", n, frames)
    run_bench(BenchConfig(tuple(model), threads, frames=frames, http=http), out=typer.echo)
