"""The door: its state and timeline (open to whoever reaches the API), the live view and manual unlock
(both need the unlock token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from toolkit.runtime import schemas
from toolkit.runtime.actuator import RelayError
from toolkit.runtime.routes.context import PRIVATE, AppContext, cached, context, jpeg_responses, require_token

router = APIRouter()
# Answers read from memory are async: no worker thread per request, so many open pages cost the door's
# process less CPU and GIL time; only the live view (one JPEG encode per new frame) and the relay use threads.


@router.get("/door/state", tags=["page"], response_model=schemas.DoorState)
async def door_state(ctx: AppContext = Depends(context)) -> dict:
    """Lock state, readiness, model, threshold and its error rates, uptime, frame rate, latency."""
    return {**ctx.status.state(), "snapshots": getattr(ctx.door, "snapshots", None) is not None,
            "notice": ctx.notice}  # fmt: skip


@router.get("/door/timeline", tags=["page"], response_model=schemas.Timeline)
async def door_timeline(limit: int = 50, ctx: AppContext = Depends(context)) -> Response:
    """The last decisions (one per judged frame) and faults, newest first."""
    limit = max(1, min(limit, 100))
    return cached(ctx, "timeline", (ctx.status.version, limit),
                  lambda: schemas.Timeline.model_validate(ctx.status.timeline(limit)))  # fmt: skip


@router.get(
    "/door/live.jpg",
    tags=["page"],
    dependencies=[Depends(require_token)],
    response_class=Response,
    responses=jpeg_responses("no frame yet"),
)
async def live(ctx: AppContext = Depends(context)) -> Response:
    """The last judged frame with the face box and the probability drawn on it (needs the token)."""
    data = await ctx.in_worker(ctx.status.live_jpeg)
    if data is None:
        raise HTTPException(404, "no frame yet; the live view starts with the next frame")
    return Response(data, media_type="image/jpeg", headers=PRIVATE)


@router.post(
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
def door_open(ctx: AppContext = Depends(context)) -> dict:
    """Manual unlock for the open period; needs ``Authorization: Bearer <token>``."""
    if ctx.door is None:
        raise HTTPException(409, "no door attached to this server; run 'toolkit door run --serve'")
    try:
        return ctx.door.manual_open()
    except RelayError as exc:
        raise HTTPException(503, f"{exc}; the door is locked") from None
