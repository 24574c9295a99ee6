"""The door's web page and offline API docs: ``GET /`` with its static files, and ``/docs``.

The page is three static files shipped in the package (``static/``): no build step, no CDN, only relative
URLs (it works under any path prefix of a reverse proxy). What it shows comes from the door and review
routers (``toolkit.runtime.routes``): the state and the timeline are open to anyone who reaches the API;
whatever shows a face (the live view, the snapshots) and relabelling need the unlock token.
``/docs`` loads Swagger UI from the ``fastapi-offline`` package's copy, not from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from toolkit.runtime.guard import docs_csp

STATIC = Path(__file__).parent / "static"
# The page runs only its own files: an injected script or a framing site cannot press the unlock button.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI served from this process (the app is built with ``docs_url=None``)."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/static/docs", StaticFiles(directory=assets), name="docs-assets")

    # Relative URLs: /docs and /openapi.json sit side by side behind any proxy prefix. Built once: its CSP
    # allows the page's one inline script by hash, and nothing else (no framing: it can call /door/open too).
    html = get_swagger_ui_html(
        openapi_url="openapi.json",
        title=f"{app.title} - API",
        swagger_js_url="static/docs/swagger-ui-bundle.js",
        swagger_css_url="static/docs/swagger-ui.css",
        swagger_favicon_url="static/docs/favicon.png",
    ).body
    headers = {**PAGE_HEADERS, "Content-Security-Policy": docs_csp(html.decode())}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return Response(html, media_type="text/html", headers=headers)


def add_page(app: FastAPI) -> None:
    """``GET /`` (the page) and its static files; the page's data come from the door and review routers."""
    app.mount("/static/page", StaticFiles(directory=STATIC), name="page-assets")
    index = (STATIC / "index.html").read_bytes()  # 2 kB read once: no worker thread and file read per visit

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(index, media_type="text/html", headers=PAGE_HEADERS)
