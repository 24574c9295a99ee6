"""Review: the door's kept snapshots, one image each, and relabelling one into ``LABELLED/<label>/``.

Every route shows a face or moves one, so each needs the unlock token.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException

from toolkit.runtime import schemas
from toolkit.runtime.routes.context import (
    PRIVATE,
    TOKEN_ERRORS,
    AppContext,
    cached,
    context,
    jpeg_responses,
    require_token,
)

router = APIRouter(tags=["page"], dependencies=[Depends(require_token)])
_OFF = {409: {"model": schemas.ErrorBody, "description": "snapshots off"}}


def store(ctx: AppContext = Depends(context)):
    """The door's snapshot store, or 409 when snapshots are off."""
    if getattr(ctx.door, "snapshots", None) is None:
        raise HTTPException(409, "snapshots are off: run 'toolkit door run --serve --snapshots DIR'")
    return ctx.door.snapshots


@router.get("/door/snapshots", response_model=schemas.Snapshots, responses={**_OFF, **TOKEN_ERRORS})
async def snapshots(limit: int = 100, ctx: AppContext = Depends(context)) -> Response:
    """The kept snapshots, newest first, and the labels they can be given (needs the token)."""
    s, limit = store(ctx), max(1, min(limit, 500))
    labels = list(ctx.holder.predictor.manifest.labels)  # a hot reload may bring other labels
    return cached(ctx, "snapshots", (s.version, s.dropped, limit, tuple(labels)),
                  lambda: schemas.Snapshots(labels=labels, total_bytes=s.total, cap_bytes=s.cap_bytes,
                                            dropped=s.dropped, snapshots=s.list(limit)),
                  headers=PRIVATE)  # fmt: skip


@router.get("/door/snapshots/{name}", response_class=FileResponse, responses=jpeg_responses("no such snapshot"))
def snapshot_image(name: str, ctx: AppContext = Depends(context)) -> FileResponse:
    """One snapshot's full frame (needs the token)."""
    try:
        path = store(ctx).path(name)
    except KeyError:
        raise HTTPException(404, f"no snapshot {name!r}") from None
    return FileResponse(path, media_type="image/jpeg", headers=PRIVATE)


@router.post(
    "/door/snapshots/{name}/label",
    response_model=schemas.Labelled,
    responses={400: {"model": schemas.ErrorBody, "description": "not a label of the model"},
               404: {"model": schemas.ErrorBody, "description": "no such snapshot"}, **TOKEN_ERRORS},
)  # fmt: skip
def label(name: str, body: schemas.LabelRequest, ctx: AppContext = Depends(context)) -> dict:
    """Give a snapshot one of the model's labels: it moves to LABELLED/<label>/ for the next fine-tune."""
    try:
        target = store(ctx).relabel(name, body.label, tuple(ctx.holder.predictor.manifest.labels))
    except KeyError:
        raise HTTPException(404, f"no snapshot {name!r}") from None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return {"name": name, "label": body.label, "path": str(target)}
