"""What ``toolkit door serve`` and ``toolkit door run`` do: wire model, camera, relay and API together.

``run`` with a ServeConfig runs the camera loop in a thread and the API in the main thread (uvicorn
owns SIGINT/SIGTERM there); SIGHUP reloads the model in both commands. Under systemd (``Type=notify``)
both say READY=1 once the model is loaded and the API listens, and ``run`` feeds the watchdog from its
decision loop; ``--mqtt`` adds the MQTT bridge (:mod:`toolkit.runtime.mqtt`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from toolkit.runtime.actuator import make_actuator
from toolkit.runtime.camera import make_cropper, open_source
from toolkit.runtime.core.config import DoorConfig, ModelConfig, MqttConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.core.policy import visit_far
from toolkit.runtime.core.sdnotify import Notifier
from toolkit.runtime.door import DoorLoop
from toolkit.runtime.extras import door_extra
from toolkit.runtime.security import UnlockLimiter, load_token, unlock_refusal

log = logging.getLogger("toolkit.runtime")
STATE_POLL_SECONDS = 1.0  # how soon a version chosen by the CLI serves (a stat of two files per poll)


def serve_model(model: ModelConfig, serve: ServeConfig, threshold: float | None = None) -> None:
    """Serve the HTTP API (no camera, no relay) until interrupted.

    Raises:
        ToolkitError: invalid model folder or token file; the door extra (fastapi, uvicorn) not installed.
    """
    create_app, run_server = _server()
    holder = ModelHolder(model, threshold)
    _warn_if_synthetic(holder)
    token, notice = _unlock_token(serve)
    _warn_if_exposed(serve, token)
    app = create_app(holder, serve, token=token, notice=notice)
    stop = threading.Event()
    _watch(holder, stop)
    log.info("serving %s on http://%s:%d", holder.predictor.name, serve.host, serve.port)
    notifier = Notifier()
    try:
        run_server(app, serve, ready=notifier.ready)
    finally:
        notifier.stopping()
        stop.set()


def far_line(entry, k: int, n: int, kind: str | None) -> str:
    """The manifest's per-frame false-accept rate and what it means per visit under the k-of-n rule.

    A rate measured as 0 is printed as the bound the export records for it (the rule of three,
    :func:`toolkit.metrics.far_upper_95`), and the visit figures are worked out from that bound.
    """
    from toolkit.metrics import far_upper_95, rate_text

    negatives = (entry.validation or {}).get("negatives")
    zero = bool(negatives) and round(entry.far * negatives) == 0
    v = visit_far(far_upper_95(negatives) if zero else entry.far, k, n)
    bound = "≤ " if zero else ""
    return (f"false-accept rate {rate_text(entry.far, negatives)} on {kind or 'unnamed'} data (manifest); per visit "
            f"under {k} of {n}: {bound}{v['independent_frames']:.2g} if frames were independent, up to "
            f"{bound}{v['identical_frames']:.4g} if they were identical")


def _warn_if_synthetic(holder: ModelHolder) -> None:
    message = holder.predictor.manifest.synthetic_warning(holder.predictor.folder)
    if message:  # the door still runs: a demo on synthetic data is legitimate, a silent promise is not
        log.warning("%s", message)


def run_door(
    model: ModelConfig,
    door: DoorConfig,
    serve: ServeConfig | None = None,
    mqtt: MqttConfig | None = None,
    auth: ServeConfig | None = None,
) -> int:
    """Run the camera loop (and the API when ``serve`` is given); returns the number of frames seen.

    Args:
        model, door: the export and the door's settings.
        serve: the HTTP API's settings, or None for no API.
        mqtt: the MQTT bridge's settings, or None (or no ``mqtt`` broker) for none.
        auth: where the unlock token and the failed-unlock limits come from (default ``serve``'s): the
            MQTT unlock command needs them without the API too.

    Raises:
        ToolkitError: invalid model, camera, relay, face or MQTT option; a door extra package they need not installed.
    """
    auth = auth or serve or ServeConfig()
    mqtt = mqtt if mqtt is not None and mqtt.mqtt else None
    if serve is not None:
        create_app, run_server = _server()  # before the camera and relay are claimed
    token, notice = _unlock_token(auth) if serve is not None or mqtt is not None else (None, None)
    limiter = UnlockLimiter(auth.unlock_max_failures, auth.unlock_window_seconds)  # shared by HTTP and MQTT
    bridge = None
    if mqtt is not None:  # like the API: a missing package or file fails before the camera and relay are claimed
        from toolkit.runtime.mqtt import MqttBridge, read_password

        bridge = MqttBridge(mqtt, token, limiter, read_password(mqtt, dict(os.environ)), notice=notice)
    holder = ModelHolder(model, door.policy.threshold)
    _warn_if_synthetic(holder)
    cropper = make_cropper(door.face, model.folder, model.threads)
    source = open_source(door.camera, loop=door.loop)
    actuator = make_actuator(door.relay, door.relay_pin, door.active_high)
    loop = DoorLoop(holder, source, door, actuator, cropper=cropper)
    p, policy = holder.predictor, door.policy
    log.info(
        "door: model %s (%s, threshold %.3f), camera %s, face %s, relay %s, open when %d of %d frames are %s",
        p.name, p.file, loop.policy.threshold, door.camera, getattr(cropper, "name", "none"), actuator.name,
        policy.k, policy.n, policy.open_on or p.positive_label,
    )  # fmt: skip
    log.info("door: runtimes %s", ", ".join(f"{k} {v}" for k, v in p.runtimes().items()))
    entry = p.manifest.files.get(p.file)
    if entry is not None and entry.far is not None and door.policy.threshold is None:
        log.info("door: %s", far_line(entry, policy.k, policy.n, p.manifest.figures_kind))
    notifier = Notifier()
    loop.heartbeats.append(notifier.watchdog)  # from the decision loop itself: a hung loop gets restarted
    stop = threading.Event()
    _watch(holder, stop)
    if threading.current_thread() is threading.main_thread():
        # systemctl stop: end the loop and lock. uvicorn, when serving, re-raises the SIGTERM it caught
        # after shutting down; with this handler in place that stops the loop instead of killing the
        # process before the relay is locked.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if bridge is not None:
            bridge.start(loop)
        if serve is None:
            notifier.ready()
            return loop.run(stop)
        _warn_if_exposed(serve, token)
        app = create_app(holder, serve, door=loop, token=token, limiter=limiter, notice=notice)
        thread = threading.Thread(target=loop.run, args=(stop,), name="door-loop", daemon=True)
        thread.start()
        log.info("door loop on %s, API on http://%s:%d", door.camera, serve.host, serve.port)
        run_server(app, serve, ready=notifier.ready)
        stop.set()
        thread.join(timeout=10)
        return loop.frames
    finally:
        notifier.stopping()
        stop.set()
        if bridge is not None:
            bridge.close()  # after the loop's last state (locked), then "offline"
        loop.close()  # locked, whatever happened


def _unlock_token(auth: ServeConfig) -> tuple[str | None, str | None]:
    """(the token manual unlock may use, the loud line when the configured one is refused).

    A refused token (weak, or in a file others can read) disables manual unlock only: the door keeps deciding
    and serving, and says why at start (ERROR: it passes --quiet) and on the page.
    """
    token = load_token(auth)
    notice = unlock_refusal(auth, token)
    if notice is not None:
        log.error("%s", notice)
        return None, notice
    return token, None


def _server():
    """The HTTP API's (create_app, serve), or one line naming the door extra on a base install."""
    with door_extra("the HTTP API"):
        # The two packages a user knows the API by, first: on a base install the line names fastapi, not
        # whatever it pulls in; uvicorn is otherwise imported only once the model is loaded.
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        from toolkit.runtime.server import create_app, serve
    return create_app, serve


def _warn_if_exposed(serve: ServeConfig, token: str | None) -> None:
    from toolkit.runtime.security import exposure_warning

    message = exposure_warning(serve.host, token is not None, serve.token_env)
    if message:
        log.warning(message)


def _watch(holder: ModelHolder, stop: threading.Event) -> None:
    if threading.current_thread() is threading.main_thread():
        holder.install_sighup()
    if holder.config.watch_seconds > 0:
        holder.watch(holder.config.watch_seconds, stop)
    elif holder.config.state is not None:  # a version chosen by 'toolkit door adapt/rollback' from another process
        holder.watch(STATE_POLL_SECONDS, stop)
