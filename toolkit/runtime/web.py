"""The door's web page and offline API docs: ``GET /``, its state, timeline, live view and snapshot review.

The page is three static files shipped in the package (``static/``): no build step, no CDN, only relative
URLs (it works under any path prefix of a reverse proxy). The state and the timeline are open to anyone who
reaches the API; whatever shows a face (the live view, the snapshots) and relabelling need the unlock token
in an ``Authorization`` header, checked like ``POST /door/open`` (constant time, lock-out after failures).
``/docs`` loads Swagger UI from the ``fastapi-offline`` package's copy, not from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from toolkit.runtime import schemas
from toolkit.runtime.status import DoorStatus

STATIC = Path(__file__).parent / "static"
# The page runs only its own files: an injected script or a framing site cannot press the unlock button.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
PRIVATE = {"Cache-Control": "no-store"}  # a face never stays in a proxy's or browser's cache
_TOKEN_ERRORS = {
    code: {"model": schemas.ErrorBody, "description": why}
    for code, why in [(401, "bad token"), (403, "no token configured"), (429, "too many wrong tokens")]
}


def _jpeg_responses(missing: str) -> dict:
    """OpenAPI responses of a route that answers a JPEG (with the token), or 404 with ``missing``."""
    return {
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        404: {"model": schemas.ErrorBody, "description": missing},
        **_TOKEN_ERRORS,
    }


def add_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI served from this process (the app is built with ``docs_url=None``)."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/static/docs", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        # Relative URLs: /docs and /openapi.json sit side by side behind any proxy prefix.
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="static/docs/swagger-ui-bundle.js",
            swagger_css_url="static/docs/swagger-ui.css",
            swagger_favicon_url="static/docs/favicon.png",
        )


def add_page(app: FastAPI, holder: Any, door: Any, require_token: Any, in_worker: Any) -> DoorStatus:
    """Add the page and its endpoints to ``app``; returns the :class:`DoorStatus` watching ``door``.

    Args:
        app: the door's API.
        holder: the serving model's holder.
        door: the :class:`~toolkit.runtime.door.DoorLoop`, or None (``door serve``: state only).
        require_token: a FastAPI dependency that refuses a request without the right bearer token.
        in_worker: ``await in_worker(fn)`` runs ``fn`` in the API's capped, lower-priority worker threads.
    """
    status = DoorStatus(door, holder)
    app.mount("/static/page", StaticFiles(directory=STATIC), name="page-assets")
    guarded = [Depends(require_token)]
    # Answers read from memory are async: no worker thread per request, so many open pages cost the door's
    # process less CPU and GIL time; only the live view (one JPEG encode per new frame) and files use threads.

    def store():
        if getattr(door, "snapshots", None) is None:
            raise HTTPException(409, "snapshots are off: run 'toolkit door run --serve --snapshots DIR'")
        return door.snapshots

    index = (STATIC / "index.html").read_bytes()  # 2 kB read once: no worker thread and file read per visit

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(index, media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/door/state", tags=["page"], response_model=schemas.DoorState)
    async def door_state() -> dict:
        """Lock state, readiness, model, threshold and its error rates, uptime, frame rate, latency."""
        return {**status.state(), "snapshots": getattr(door, "snapshots", None) is not None}

    # Serialised once per change, whatever the number of open pages: the door's process (and its GIL) is
    # shared with the decision loop, and 50 validated decisions per poll were the page's dearest answer.
    cache: dict[str, tuple[tuple, bytes]] = {}

    def cached(name: str, key: tuple, build) -> Response:
        hit = cache.get(name)
        if hit is None or hit[0] != key:
            hit = cache[name] = (key, build().model_dump_json().encode())
        return Response(hit[1], media_type="application/json", headers=PRIVATE if name == "snapshots" else None)

    @app.get("/door/timeline", tags=["page"], response_model=schemas.Timeline)
    async def door_timeline(limit: int = 50) -> Response:
        """The last decisions (one per judged frame) and faults, newest first."""
        limit = max(1, min(limit, 100))
        return cached("timeline", (status.version, limit),
                      lambda: schemas.Timeline.model_validate(status.timeline(limit)))  # fmt: skip

    @app.get(
        "/door/live.jpg",
        tags=["page"],
        dependencies=guarded,
        response_class=Response,
        responses=_jpeg_responses("no frame yet"),
    )
    async def live() -> Response:
        """The last judged frame with the face box and the probability drawn on it (needs the token)."""
        data = await in_worker(status.live_jpeg)
        if data is None:
            raise HTTPException(404, "no frame yet; the live view starts with the next frame")
        return Response(data, media_type="image/jpeg", headers=PRIVATE)

    off = {409: {"model": schemas.ErrorBody, "description": "snapshots off"}}

    @app.get("/door/snapshots", tags=["page"], dependencies=guarded, response_model=schemas.Snapshots,
             responses={**off, **_TOKEN_ERRORS})  # fmt: skip
    async def snapshots(limit: int = 100) -> Response:
        """The kept snapshots, newest first, and the labels they can be given (needs the token)."""
        s, limit = store(), max(1, min(limit, 500))
        labels = list(holder.predictor.manifest.labels)  # a hot reload may bring other labels
        return cached("snapshots", (s.version, s.dropped, limit, tuple(labels)),
                      lambda: schemas.Snapshots(labels=labels, total_bytes=s.total, cap_bytes=s.cap_bytes,
                                                dropped=s.dropped, snapshots=s.list(limit)))  # fmt: skip

    @app.get(
        "/door/snapshots/{name}",
        tags=["page"],
        dependencies=guarded,
        response_class=FileResponse,
        responses=_jpeg_responses("no such snapshot"),
    )
    def snapshot_image(name: str) -> FileResponse:
        """One snapshot's full frame (needs the token)."""
        try:
            path = store().path(name)
        except KeyError:
            raise HTTPException(404, f"no snapshot {name!r}") from None
        return FileResponse(path, media_type="image/jpeg", headers=PRIVATE)

    @app.post(
        "/door/snapshots/{name}/label",
        tags=["page"],
        dependencies=guarded,
        response_model=schemas.Labelled,
        responses={400: {"model": schemas.ErrorBody, "description": "not a label of the model"},
                   404: {"model": schemas.ErrorBody, "description": "no such snapshot"}, **_TOKEN_ERRORS},
    )  # fmt: skip
    def label(name: str, body: schemas.LabelRequest) -> dict:
        """Give a snapshot one of the model's labels: it moves to LABELLED/<label>/ for the next fine-tune."""
        try:
            target = store().relabel(name, body.label, tuple(holder.predictor.manifest.labels))
        except KeyError:
            raise HTTPException(404, f"no snapshot {name!r}") from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"name": name, "label": body.label, "path": str(target)}

    return status
