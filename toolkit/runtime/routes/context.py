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
from toolkit.runtime.guard import RefusalLog, real_client
from toolkit.runtime.metrics import Metrics
from toolkit.runtime.security import UnlockLimiter, retry_seconds, tokens_match
from toolkit.runtime.status import DoorStatus
from toolkit.runtime.uploads import DecodeBudget

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
        notice: why manual unlock is disabled although a token is configured (shown on the page), or None.
        proxies: the trusted reverse proxies; refusals: wrong tokens and unknown hosts, summarised in the log.
    """

    holder: ModelHolder
    config: ServeConfig
    door: Any
    token: str | None
    limiter: UnlockLimiter
    metrics: Metrics
    status: DoorStatus
    in_worker: Callable[..., Awaitable[Any]]
    # The loud line when the configured token is refused (weak, or a file others can read): manual unlock off.
    notice: str | None = None
    proxies: tuple = ()  # trusted reverse proxies (networks): their X-Forwarded-For names the client
    refusals: RefusalLog = field(default_factory=lambda: RefusalLog("http"))
    decodes: DecodeBudget = field(default_factory=lambda: DecodeBudget(25_000_000))  # uploads' pixels in flight
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
    """The unlock token's rules, for /door/open and whatever shows a face.

    No credentials at all: a plain 401 that counts nowhere (any web page the owner opens can make the
    browser send such requests). The right token always passes, whoever else failed; a wrong one counts
    against its real client (:func:`~toolkit.runtime.guard.real_client`), which, over its limit, gets 429.
    Async: a hash and a dict look-up need no worker thread (a page polls; each thread hop costs the door CPU).
    """
    if ctx.token is None:
        raise HTTPException(403, ctx.notice or f"manual unlock and review are disabled: set {ctx.config.token_env} "
                            "or --token-file")  # fmt: skip
    if credentials is None or not credentials.credentials:
        raise HTTPException(401, "this needs the unlock token: send 'Authorization: Bearer <token>'",
                            {"WWW-Authenticate": "Bearer"})  # fmt: skip
    client = real_client(request.client.host if request.client else None, request.scope["headers"], ctx.proxies)
    if tokens_match(credentials.credentials, ctx.token):
        ctx.limiter.succeeded(client)
        return
    wait = ctx.limiter.retry_after(client)
    if wait is not None:
        ctx.metrics.door_event("unlock_rate_limited")
        ctx.refusals.note("wrong token over the client's limit", client)
        seconds = retry_seconds(wait)
        raise HTTPException(
            429, f"too many wrong tokens from this client; retry in {seconds} s", {"Retry-After": str(seconds)}
        )
    ctx.limiter.failed(client)
    ctx.metrics.door_event("unlock_refused")
    ctx.refusals.note("wrong token", client)
    raise HTTPException(401, "wrong bearer token", {"WWW-Authenticate": "Bearer"})


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
