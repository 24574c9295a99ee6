"""What every router needs from the running door: one :class:`AppContext` per app, and the token check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from toolkit.runtime import schemas
from toolkit.runtime.core.config import ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.metrics import Metrics
from toolkit.runtime.security import UnlockLimiter, retry_seconds, tokens_match
from toolkit.runtime.status import DoorStatus

ERRORS = {
    code: {"model": schemas.ErrorBody, "description": why}
    for code, why in [(400, "bad input"), (404, "unknown model"), (408, "body too slow"), (413, "too large")]
}
TOKEN_ERRORS = {
    code: {"model": schemas.ErrorBody, "description": why}
    for code, why in [(401, "bad token"), (403, "no token configured"), (429, "too many wrong tokens")]
}
PRIVATE = {"Cache-Control": "no-store"}  # a face never stays in a proxy's or browser's cache


@dataclass
class AppContext:
    """The door's objects as the routes see them.

    Attributes:
        holder: the serving model (hot-reloadable).
        config: limits and auth settings.
        door: the :class:`~toolkit.runtime.door.DoorLoop`, or None (``door serve``: no camera, no unlock).
        token: the bearer token for unlock and whatever shows a face; None refuses them.
        limiter: the wrong-token limiter.
        metrics: the Prometheus metrics.
        status: what the page shows of the door.
        in_worker: ``await in_worker(fn, *args)`` runs ``fn`` in the capped, lower-priority inference threads.
    """

    holder: ModelHolder
    config: ServeConfig
    door: Any
    token: str | None
    limiter: UnlockLimiter
    metrics: Metrics
    status: DoorStatus
    in_worker: Callable[..., Awaitable[Any]]
    # Answers serialised once per change, whatever the number of open pages (see routes.door.cached).
    answers: dict[str, tuple[tuple, bytes]] = field(default_factory=dict)
    adapt_job: Any = None  # the page's adapt (routes.adapt), made on first use

    def is_ready(self) -> tuple[bool, str]:
        return self.door.ready() if self.door is not None else (True, "model loaded")


def context(request: Request) -> AppContext:
    """The dependency every route takes: the app's :class:`AppContext`."""
    return request.app.state.context


bearer = HTTPBearer(auto_error=False, description="the manual-unlock token")


async def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ctx: AppContext = Depends(context),
) -> None:
    """The unlock token's rules, for /door/open and whatever shows a face: constant-time compare, lock-out.

    Async: a hash and a dict look-up need no worker thread (a page polls; each thread hop costs the door CPU).
    """
    if ctx.token is None:
        raise HTTPException(403, f"manual unlock and review are disabled: set {ctx.config.token_env} or --token-file")
    client = request.client.host if request.client else "unknown"
    wait = ctx.limiter.retry_after(client)
    if wait is not None:  # refused unchecked: not even the right token gets through now
        ctx.metrics.door_event("unlock_rate_limited")
        seconds = retry_seconds(wait)
        raise HTTPException(
            429, f"too many wrong tokens from this client; retry in {seconds} s", {"Retry-After": str(seconds)}
        )
    if not tokens_match(credentials.credentials if credentials else "", ctx.token):
        ctx.limiter.failed(client)
        ctx.metrics.door_event("unlock_refused")
        raise HTTPException(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
    ctx.limiter.succeeded(client)


def cached(ctx: AppContext, name: str, key: tuple, build: Callable[[], Any], headers: dict | None = None):
    """A JSON response built once per ``key``: the door's process (and its GIL) is shared with the decision
    loop, and 50 validated decisions per poll were the page's dearest answer."""
    from fastapi.responses import Response

    hit = ctx.answers.get(name)
    if hit is None or hit[0] != key:
        hit = ctx.answers[name] = (key, build().model_dump_json().encode())
    return Response(hit[1], media_type="application/json", headers=headers)


def jpeg_responses(missing: str) -> dict:
    """OpenAPI responses of a route that answers a JPEG (with the token), or 404 with ``missing``."""
    return {
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        404: {"model": schemas.ErrorBody, "description": missing},
        **TOKEN_ERRORS,
    }
