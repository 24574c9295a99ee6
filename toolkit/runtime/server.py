"""The HTTP API (FastAPI): KServe v2 inference, ``/predict``, manual unlock, Prometheus metrics.

Only ``toolkit door serve``/``run`` import this module (fastapi, prometheus-client come with the
``door`` extra). Every bad request gets a 4xx with ``{"error": "..."}`` saying what is wrong; nothing
a client sends can take the server down or move the door without the bearer token. Oversized bodies
(413) and slow clients (408, or a closed connection while headers trickle in) are cut off
(:mod:`toolkit.runtime.http_limits`), and wrong unlock tokens are limited per client (429).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from toolkit import __version__
from toolkit.errors import ImageError, ToolkitError
from toolkit.runtime import schemas
from toolkit.runtime.actuator import RelayError
from toolkit.runtime.config import ServeConfig
from toolkit.runtime.holder import ModelHolder
from toolkit.runtime.http_limits import BodyTimeout, BodyTooLarge, LimitAndMeasure, error_response
from toolkit.runtime.metrics import Metrics
from toolkit.runtime.security import UnlockLimiter, guarded_http_protocol, retry_seconds, tokens_match
from toolkit.runtime.v2 import INFER_REQUEST_SCHEMA, V2Error, encode_response, parse_infer_request
from toolkit.runtime.web import add_docs, add_page

log = logging.getLogger("toolkit.runtime")
_IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
_PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
        },
        "image/jpeg": _IMAGE_BODY,
        "image/png": _IMAGE_BODY,
        "application/octet-stream": _IMAGE_BODY,
    },
}
_INFER_RESPONSES = {
    200: {
        "description": "KServe v2 inference response (JSON; with binary_data_output the tensors follow the JSON)",
        "model": schemas.InferResponse,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}
_ERRORS = {
    code: {"model": schemas.ErrorBody, "description": why}
    for code, why in [(400, "bad input"), (404, "unknown model"), (408, "body too slow"), (413, "too large")]
}


def create_app(
    holder: ModelHolder,
    config: ServeConfig,
    door: Any = None,
    token: str | None = None,
    limiter: UnlockLimiter | None = None,
) -> FastAPI:
    """Build the API around a model holder and, when running the camera loop too, its door.

    Args:
        holder: the serving model (hot-reloadable).
        config: limits and auth settings.
        door: a :class:`~toolkit.runtime.door.DoorLoop` for manual unlock and readiness, or None.
        token: the bearer token for ``POST /door/open``; None refuses every manual unlock.
        limiter: failed-unlock limiter; None builds one from ``config``.
    """
    # /docs comes from add_docs (Swagger UI shipped in a package, not a CDN); ReDoc would fetch web fonts.
    niceness = config.inference_nice if door is not None else 0

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # The event loop's thread too runs nicer beside a door: many open pages must not delay its decisions.
        _at_priority(niceness, lambda: None)
        yield

    app = FastAPI(title="toolkit door", version=__version__, description=__doc__, docs_url=None, redoc_url=None,
                  lifespan=lifespan)  # fmt: skip
    metrics = Metrics()
    app.state.metrics = metrics
    limiter = limiter or UnlockLimiter(config.unlock_max_failures, config.unlock_window_seconds)
    app.state.unlock_limiter = limiter
    holder.listeners.append(metrics.door_event)
    if door is not None:
        door.listeners.append(metrics.door_event)
    app.add_middleware(
        LimitAndMeasure, metrics=metrics, max_body=config.max_body_bytes, timeout=config.request_timeout_seconds
    )
    # Inference runs in at most this many threads; other requests wait their turn in the event loop. The
    # default pool (40 threads) lets a burst of clients thrash the GIL and the cores: throughput falls,
    # each thread keeps its own malloc arena (memory grows), and the door loop waits for a core.
    workers = anyio.CapacityLimiter(inference_threads(config, with_door=door is not None))
    app.state.inference_threads = workers.total_tokens

    # Beside a door, those threads also run at a lower OS priority: the door's decisions get a core first
    # (measured on 2 busy cores, 32 clients: door p99 27-66 ms instead of 103-167 ms, HTTP throughput no lower).
    async def in_worker(fn, *args):
        return await anyio.to_thread.run_sync(_at_priority, niceness, fn, *args, limiter=workers)

    bearer = HTTPBearer(auto_error=False, description="the manual-unlock token")

    def model_for(name: str):
        predictor = holder.predictor
        if name != predictor.name:
            raise HTTPException(404, f"model {name!r} not found; this server serves {predictor.name!r}")
        return predictor

    def is_ready() -> tuple[bool, str]:
        if door is not None:
            return door.ready()
        return True, "model loaded"

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, f"request body exceeds {config.max_body_bytes:,} bytes")

    @app.exception_handler(BodyTimeout)
    async def _too_slow(request: Request, exc: BodyTimeout) -> JSONResponse:
        message = f"request body did not arrive within {config.request_timeout_seconds:g} s"
        return error_response(408, message, {"Connection": "close"})

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody is listening; not a server error worth a traceback

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(ToolkitError)
    async def _user_error(request: Request, exc: ToolkitError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a bad request: logged with its traceback, answered as JSON like every other error.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")

    async def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
        """The unlock token's rules, for /door/open and whatever shows a face: constant-time compare, lock-out.

        Async: a hash and a dict look-up need no worker thread (a page polls; each thread hop costs the door CPU).
        """
        if token is None:
            raise HTTPException(403, f"manual unlock and review are disabled: set {config.token_env} or --token-file")
        client = request.client.host if request.client else "unknown"
        wait = limiter.retry_after(client)
        if wait is not None:  # refused unchecked: not even the right token gets through now
            metrics.door_event("unlock_rate_limited")
            seconds = retry_seconds(wait)
            raise HTTPException(
                429, f"too many wrong tokens from this client; retry in {seconds} s", {"Retry-After": str(seconds)}
            )
        if not tokens_match(credentials.credentials if credentials else "", token):
            limiter.failed(client)
            metrics.door_event("unlock_refused")
            raise HTTPException(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        limiter.succeeded(client)

    add_docs(app)
    app.state.status = add_page(app, holder, door, require_token, in_worker)

    @app.get("/v2", tags=["v2"], response_model=schemas.ServerMetadata)
    def server_metadata() -> dict:
        return {"name": "toolkit-door", "version": __version__, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live", tags=["v2"], response_model=schemas.Live)
    def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"], response_model=schemas.Ready,
             responses={503: {"model": schemas.Ready, "description": "not ready: door locked"}})  # fmt: skip
    def ready() -> Response:
        ok, reason = is_ready()
        return JSONResponse({"ready": ok, "reason": reason}, status_code=200 if ok else 503)

    def version_for(name: str, version: str):
        if version != "1":
            raise HTTPException(404, f"model {name!r} has only version '1', not {version!r}")
        return model_for(name)

    @app.get("/v2/models/{name}", tags=["v2"], responses=_ERRORS, response_model=schemas.ModelMetadata)
    def model_metadata(name: str) -> dict:
        return _metadata(model_for(name))

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"], responses=_ERRORS,
             response_model=schemas.ModelMetadata)  # fmt: skip
    def model_version_metadata(name: str, version: str) -> dict:
        return _metadata(version_for(name, version))

    def _metadata(p) -> dict:
        d = p.describe()
        return {
            "name": p.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": p.input_name, "datatype": "FP32", "shape": d["input"]["shape"]}],
            "outputs": [{"name": p.output_name, "datatype": "FP32", "shape": d["output"]["shape"]}],
            "parameters": {k: d[k] for k in ("labels", "output_kind", "threshold", "file", "sha256")},
        }

    @app.get("/v2/models/{name}/ready", tags=["v2"], responses=_ERRORS, response_model=schemas.ModelReady)
    def model_ready(name: str) -> dict:
        model_for(name)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], responses=_ERRORS,
             response_model=schemas.ModelReady)  # fmt: skip
    def model_version_ready(name: str, version: str) -> dict:
        version_for(name, version)
        return {"name": name, "ready": True}

    @app.post(
        "/v2/models/{name}/infer",
        tags=["v2"],
        responses=_INFER_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": INFER_REQUEST_SCHEMA}}},
    )
    async def infer(name: str, request: Request) -> Response:
        return await _infer(model_for(name), request)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        tags=["v2"],
        responses=_INFER_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": INFER_REQUEST_SCHEMA}}},
    )
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await _infer(version_for(name, version), request)

    async def _infer(p, request: Request) -> Response:
        body = await request.body()
        try:
            req = parse_infer_request(body, request.headers.get("inference-header-content-length"), p, config.max_batch)
        except V2Error as exc:
            return error_response(400, str(exc))
        start = time.perf_counter()
        probs = await in_worker(p.run, req.batch)
        metrics.inference.observe(time.perf_counter() - start)
        content, headers = encode_response(p, req, probs)
        return Response(content, headers=headers, media_type=headers.pop("content-type"))

    @app.post("/predict", tags=["door"], responses=_ERRORS, response_model=schemas.Prediction,
              openapi_extra={"requestBody": _PREDICT_BODY})  # fmt: skip
    async def predict(request: Request) -> dict:
        """Classify one image (multipart field ``file`` or the raw body). Never moves the door."""
        data = await _image_bytes(request)
        p = holder.predictor
        try:
            result = await in_worker(p.predict, data, "upload")
        except ImageError as exc:
            return error_response(400, str(exc))
        metrics.inference.observe(result.latency_ms / 1000.0)
        return {"model": p.name, **result.to_dict()}

    @app.post(
        "/door/open",
        tags=["door"],
        dependencies=[Depends(require_token)],
        response_model=schemas.Unlocked,
        responses={
            code: {"model": schemas.ErrorBody, "description": why}
            for code, why in [(401, "bad token"), (403, "disabled"), (409, "no door"),
                              (429, "too many wrong tokens from this client"), (503, "the relay failed; locked")]
        },  # fmt: skip
    )
    def door_open() -> dict:
        """Manual unlock for the open period; needs ``Authorization: Bearer <token>``."""
        if door is None:
            raise HTTPException(409, "no door attached to this server; run 'toolkit door run --serve'")
        try:
            return door.manual_open()
        except RelayError as exc:
            raise HTTPException(503, f"{exc}; the door is locked") from None

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})  # fmt: skip
    def prometheus() -> Response:
        ok, _ = is_ready()
        metrics.ready.set(1 if ok else 0)
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


_worker = threading.local()


def _at_priority(niceness: int, fn, *args):
    """Run ``fn`` in this worker thread after lowering the thread's priority once (Linux; elsewhere a no-op)."""
    if niceness and getattr(_worker, "niceness", 0) != niceness and hasattr(os, "setpriority"):
        try:
            # PRIO_PROCESS with a thread id renices that one thread on Linux; raising niceness needs no privilege.
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
        except OSError as exc:
            log.debug("cannot lower the inference thread's priority: %s", exc)
        _worker.niceness = niceness  # tried once per thread, whatever the outcome
    return fn(*args)


def inference_threads(config: ServeConfig, with_door: bool) -> int:
    """Threads that may run the model at once: the configured count, else one per core, but one core
    fewer when the door loop runs in the same process (its decisions come first)."""
    if config.inference_threads > 0:
        return config.inference_threads
    return max(1, (os.cpu_count() or 1) - (1 if with_door else 0))


async def _image_bytes(request: Request) -> bytes:
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        uploads = [v for v in form.values() if isinstance(v, UploadFile)]
        if not uploads:
            raise HTTPException(400, "multipart body has no file; send the image as form field 'file'")
        return await uploads[0].read()
    return await request.body()


def serve(app: FastAPI, config: ServeConfig, ready: Callable[[], object] | None = None) -> None:
    """Run the app with uvicorn until interrupted; ``ready()`` is called once it listens (systemd's READY=1).

    Raises:
        ToolkitError: the address cannot be bound (port in use, unknown host).
    """
    import socket

    import uvicorn

    # uvicorn reports a busy port with a log line and sys.exit(1); check first for a one-line error.
    try:
        with socket.create_server((config.host, config.port), reuse_port=False):
            pass
    except OSError as exc:
        raise ToolkitError(
            f"--host {config.host} --port {config.port}: cannot listen there ({exc.strerror or exc}); "
            "pick another --port or stop the other server"
        ) from exc

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and ready is not None:  # bound and accepting: now a client can reach it
                ready()

    Server(uvicorn_config(app, config)).run()


def uvicorn_config(app: FastAPI, config: ServeConfig, port: int | None = None):
    """uvicorn settings for the door API: no access log (it would record paths and clients), a deadline
    for request headers (:func:`~toolkit.runtime.security.guarded_http_protocol`), 5 s keep-alive, and
    no proxy headers: uvicorn trusts X-Forwarded-For from 127.0.0.1 by default, and on a loopback-bound
    server every client is 127.0.0.1, so any client could pick a fresh address for each token guess.
    Behind a reverse proxy the unlock limit therefore counts all clients together (stricter, not looser)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port if port is None else port,
        log_level=config.log_level,
        access_log=False,
        proxy_headers=False,
        http=guarded_http_protocol(config.request_timeout_seconds),
        timeout_keep_alive=5,
    )
