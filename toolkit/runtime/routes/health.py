"""Health: server metadata, liveness and readiness (KServe v2's routes) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from toolkit import __version__
from toolkit.runtime import schemas
from toolkit.runtime.routes.context import AppContext, context

router = APIRouter()


@router.get("/v2", tags=["v2"], response_model=schemas.ServerMetadata)
def server_metadata() -> dict:
    return {"name": "toolkit-door", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/v2/health/live", tags=["v2"], response_model=schemas.Live)
def live() -> dict:
    return {"live": True}


@router.get("/v2/health/ready", tags=["v2"], response_model=schemas.Ready,
            responses={503: {"model": schemas.Ready, "description": "not ready: door locked"}})  # fmt: skip
def ready(ctx: AppContext = Depends(context)) -> Response:
    ok, reason = ctx.is_ready()
    return JSONResponse({"ready": ok, "reason": reason}, status_code=200 if ok else 503)


@router.get("/metrics", tags=["ops"], response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})  # fmt: skip
def prometheus(ctx: AppContext = Depends(context)) -> Response:
    ok, _ = ctx.is_ready()
    ctx.metrics.ready.set(1 if ok else 0)
    return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)
