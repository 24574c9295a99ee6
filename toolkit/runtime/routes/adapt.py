"""Adapt: the labelled photos per class, "Adapt to this camera", the head versions, rollback and deletion.

Every route shows or changes what decides at the door, or deletes photos of the household: each needs the token.
The fit runs in a low-priority thread (:mod:`toolkit.runtime.adapt_job`); the door keeps deciding meanwhile.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from toolkit.errors import ToolkitError
from toolkit.inference import versions
from toolkit.runtime import labelled
from toolkit.runtime.adapt_job import AdaptJob
from toolkit.runtime.routes.context import PRIVATE, TOKEN_ERRORS, AppContext, context, require_token

router = APIRouter(tags=["adapt"], dependencies=[Depends(require_token)])
_CONFLICT = {409: {"description": "no state folder, no labelled folder, or an adapt is running"}}


class AdaptRequest(BaseModel):
    force: bool = Field(False, description="adapt despite too few photos, a lopsided class or a lower CV estimate")
    prior: Literal["auto", "yes", "no"] = Field("auto", description="pull the fit toward the shipped head")
    dry_run: bool = Field(False, description="only estimate (CV accuracy on the labelled photos); write nothing")


class RollbackRequest(BaseModel):
    to: str | None = Field(None, description="a version (v1...) or 'export'; default: the one served before")


def job(ctx: AppContext) -> AdaptJob:
    """The app's adapt job, made on first use (it needs the door's labelled folder)."""
    found = getattr(ctx, "adapt_job", None)
    if found is None:
        snapshots = getattr(ctx.door, "snapshots", None)
        policy = getattr(getattr(ctx.door, "config", None), "policy", None)
        found = AdaptJob(ctx.holder, snapshots.labelled if snapshots is not None else None,
                         k=policy.k if policy else 3, n=policy.n if policy else 5)
        ctx.adapt_job = found
    return found


def _summary(v: dict) -> dict:
    """What the page shows of a version."""
    if "error" in v:
        return {"id": v["id"], "current": v["current"], "error": v["error"]}
    cv = v.get("cv", {})
    return {"id": v["id"], "current": v["current"], "created": v.get("created"), "counts": v.get("counts"),
            "cv_accuracy": cv.get("accuracy"), "cv_interval_95": cv.get("interval_95"), "prior": cv.get("prior"),
            "C": cv.get("C"), "threshold": v.get("threshold"), "far": v.get("far"), "frr": v.get("frr"),
            "far_upper_95": v.get("far_upper_95"), "current_accuracy": v.get("current_accuracy"),
            "threshold_source": v.get("threshold_source"), "forced": v.get("forced"),
            "thresholds": {k: t.get("threshold") for k, t in (v.get("thresholds") or {}).items()},
            "visit_far_upper": {k: (t.get("visit") or {}).get("identical_frames")
                                for k, t in (v.get("thresholds") or {}).items()}}


@router.get("/door/adapt", responses=TOKEN_ERRORS)
def adapt_status(ctx: AppContext = Depends(context)) -> dict:
    """Labelled photos per class, whether this export can be adapted, the versions, the running adapt."""
    p = ctx.holder.predictor
    j = job(ctx)
    state = ctx.holder.config.state
    try:
        found = versions.list_versions(state)
    except ToolkitError as exc:
        found, error = [], str(exc)
    else:
        error = None
    from toolkit.inference.predictor import cannot_adapt

    return {"can_adapt": p.is_chain, "reason": None if p.is_chain else cannot_adapt(p.manifest),
            "state": state is not None, "labels": list(p.labels),
            "labelled": labelled.summary(j.labelled, tuple(p.labels)) if j.labelled is not None else {},
            "serving": p.version["id"] if p.version else None, "version_error": ctx.holder.version_error or error,
            "versions": [_summary(v) for v in found], "job": j.snapshot()}


@router.post("/door/adapt", responses={**_CONFLICT, **TOKEN_ERRORS})
def adapt_start(body: AdaptRequest | None = None, ctx: AppContext = Depends(context)) -> dict:
    """Start "Adapt to this camera": refit the head on the labelled photos (the door keeps deciding)."""
    body = body or AdaptRequest()
    if not ctx.holder.predictor.is_chain:
        from toolkit.inference.predictor import cannot_adapt

        raise HTTPException(409, cannot_adapt(ctx.holder.predictor.manifest))
    try:
        return job(ctx).start(force=body.force, prior=body.prior, dry_run=body.dry_run)
    except ToolkitError as exc:
        raise HTTPException(409, str(exc)) from None


@router.post("/door/adapt/rollback", responses={**_CONFLICT, **TOKEN_ERRORS})
def adapt_rollback(body: RollbackRequest | None = None, ctx: AppContext = Depends(context)) -> dict:
    """Go back to the version served before (or to ``to``); the next frame is judged by it."""
    state = ctx.holder.config.state
    if state is None:
        raise HTTPException(409, "no state folder: run the door with --state DIR")
    try:
        if body is not None and body.to is not None:
            vid = None if body.to == "export" else body.to
            versions.choose(state, vid)
        else:
            vid = versions.rollback(state)
    except ToolkitError as exc:
        raise HTTPException(409, str(exc)) from None
    ctx.holder.reload()
    return {"serving": vid}


@router.delete("/door/adapt/versions/{vid}", responses={**_CONFLICT, **TOKEN_ERRORS})
def adapt_delete(vid: str, ctx: AppContext = Depends(context)) -> dict:
    """Delete a version (the serving one: after rolling back)."""
    state = ctx.holder.config.state
    if state is None:
        raise HTTPException(409, "no state folder: run the door with --state DIR")
    try:
        versions.delete(state, vid)
    except ToolkitError as exc:
        raise HTTPException(404, str(exc)) from None
    ctx.holder.reload()
    return {"deleted": vid, "serving": versions.current(state)}


_IMAGE = {200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}},
          404: {"description": "no such labelled photo"}}


@router.get("/door/labelled/{label}/{name}", response_class=FileResponse, responses={**_IMAGE, **TOKEN_ERRORS})
def labelled_photo(label: str, name: str, ctx: AppContext = Depends(context)) -> FileResponse:
    """One labelled photo (for the page's thumbnails)."""
    root = job(ctx).labelled
    try:
        path = labelled.photo_path(root, f"{label}/{name}") if root is not None else None
    except ToolkitError as exc:
        raise HTTPException(404, str(exc)) from None
    if path is None:
        raise HTTPException(404, "no labelled folder")
    return FileResponse(path, headers=PRIVATE)


@router.delete("/door/labelled/{label}/{name}", responses=TOKEN_ERRORS)
def labelled_delete(label: str, name: str, ctx: AppContext = Depends(context)) -> dict:
    """Delete one labelled photo (a photo of the household)."""
    root = job(ctx).labelled
    if root is None:
        raise HTTPException(409, "no labelled folder: run the door with --snapshots DIR")
    try:
        labelled.delete_photo(root, f"{label}/{name}")
    except ToolkitError as exc:
        raise HTTPException(404, str(exc)) from None
    state = ctx.holder.config.state
    if state is not None:  # the cached features of the household's photos go with them (recomputed when needed)
        for cache in versions.adapt_root(state).glob("features-*.npz"):
            cache.unlink(missing_ok=True)
    return {"deleted": f"{label}/{name}"}
