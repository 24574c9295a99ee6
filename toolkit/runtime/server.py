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
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from toolkit import __version__
from toolkit.errors import ToolkitError
from toolkit.runtime.core.config import ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.guard import Guard, HostCheck, RefusalLog, default_hosts, parse_networks
from toolkit.runtime.http_limits import BodyTimeout, BodyTooLarge, LimitAndMeasure, error_response
from toolkit.runtime.metrics import Metrics
from toolkit.runtime.routes import adapt as adapt_routes
from toolkit.runtime.routes import door as door_routes
from toolkit.runtime.routes import health, inference, review
from toolkit.runtime.routes.context import AppContext
from toolkit.runtime.security import UnlockLimiter, guarded_http_protocol
from toolkit.runtime.status import DoorStatus
from toolkit.runtime.uploads import DecodeBudget
from toolkit.runtime.web import add_docs, add_page

log = logging.getLogger("toolkit.runtime")
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def create_app(
    holder: ModelHolder,
    config: ServeConfig,
    door: Any = None,
    token: str | None = None,
    limiter: UnlockLimiter | None = None,
    notice: str | None = None,
) -> FastAPI:
    """Build the API around a model holder and, when running the camera loop too, its door.

    The routes live in :mod:`toolkit.runtime.routes`, one router per resource; this function makes the
    objects they share (an :class:`~toolkit.runtime.routes.context.AppContext` on ``app.state.context``),
    the request limits and the error handlers, and includes the routers.

    Args:
        holder: the serving model (hot-reloadable).
        config: limits and auth settings.
        door: a :class:`~toolkit.runtime.door.DoorLoop` for manual unlock and readiness, or None.
        token: the bearer token for ``POST /door/open``; None refuses every manual unlock.
        limiter: failed-unlock limiter; None builds one from ``config``.
        notice: the loud line when a configured token was refused (manual unlock off); shown on the page.
    """
    # /docs comes from add_docs (Swagger UI shipped in a package, not a CDN); ReDoc would fetch web fonts.
    niceness = config.inference_nice if door is not None else 0

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # The event loop's thread too runs nicer beside a door: many open pages must not delay its decisions.
        _at_priority(niceness, lambda: None)
        yield
        refusals.close()  # the last summary now, and no timer outliving the server

    app = FastAPI(title="toolkit door", version=__version__, description=__doc__, docs_url=None, redoc_url=None,
                  lifespan=lifespan)  # fmt: skip
    metrics = Metrics()
    holder.listeners.append(metrics.door_event)
    if door is not None:
        door.listeners.append(metrics.door_event)
    app.add_middleware(
        LimitAndMeasure, metrics=metrics, max_body=config.max_body_bytes, timeout=config.request_timeout_seconds
    )
    refusals = RefusalLog("http")
    hosts = HostCheck(config.allowed_hosts or default_hosts(config.host))
    app.add_middleware(Guard, hosts=hosts, refusals=refusals)  # added last: the outermost, before any work
    # Inference runs in at most this many threads; other requests wait their turn in the event loop. The
    # default pool (40 threads) lets a burst of clients thrash the GIL and the cores: throughput falls,
    # each thread keeps its own malloc arena (memory grows), and the door loop waits for a core.
    workers = anyio.CapacityLimiter(inference_threads(config, with_door=door is not None))

    # Beside a door, those threads also run at a lower OS priority: the door's decisions get a core first
    # (measured on 2 busy cores, 32 clients: door p99 27-66 ms instead of 103-167 ms, HTTP throughput no lower).
    async def in_worker(fn, *args):
        return await anyio.to_thread.run_sync(_at_priority, niceness, fn, *args, limiter=workers)

    ctx = AppContext(
        holder=holder,
        config=config,
        door=door,
        token=token,
        limiter=limiter or UnlockLimiter(config.unlock_max_failures, config.unlock_window_seconds),
        metrics=metrics,
        status=DoorStatus(door, holder),
        in_worker=in_worker,
        notice=notice,
        proxies=parse_networks(config.trusted_proxy),
        refusals=refusals,
        decodes=DecodeBudget(holder.config.max_pixels),
    )
    app.state.context = ctx
    app.state.metrics = metrics
    app.state.unlock_limiter = ctx.limiter
    app.state.inference_threads = workers.total_tokens
    app.state.status = ctx.status
    _add_error_handlers(app, config)
    add_docs(app)
    add_page(app)
    for router in (door_routes.router, review.router, health.router, inference.router, adapt_routes.router):
        app.include_router(router)
    return app


def _add_error_handlers(app: FastAPI, config: ServeConfig) -> None:
    """Every error is ``{"error": "..."}`` with its status; a bug is logged with its traceback and answers 500."""

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
        # Answered outside the middlewares (Starlette's ServerErrorMiddleware): nosniff is added here.
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log", NOSNIFF)


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
