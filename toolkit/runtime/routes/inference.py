"""Inference: ``POST /predict`` (one image, the door's answer) and KServe v2's model routes (tensors in, out)."""

from __future__ import annotations

import dataclasses
import functools
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from toolkit.errors import ImageError, ToolkitError
from toolkit.inference.detect import square_crop_box
from toolkit.inference.detector_files import load_detector
from toolkit.runtime import schemas
from toolkit.runtime.http_limits import error_response
from toolkit.runtime.routes.context import ERRORS, AppContext, context
from toolkit.runtime.uploads import decode_upload
from toolkit.runtime.v2 import INFER_REQUEST_SCHEMA, V2Error, encode_response, parse_infer_request

router = APIRouter()
PARSE_INLINE = 64 << 10  # v2 bodies up to this are parsed on the event loop (under ~1 ms; a thread hop costs more)
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
_INFER_BODY = {"requestBody": {"required": True, "content": {"application/json": INFER_REQUEST_SCHEMA}}}


def model_for(name: str, ctx: AppContext):
    """The serving predictor if it is called ``name``, else 404."""
    predictor = ctx.holder.predictor
    if name != predictor.name:
        raise HTTPException(404, f"model {name!r} not found; this server serves {predictor.name!r}")
    return predictor


def version_for(name: str, version: str, ctx: AppContext):
    """The serving predictor for ``name`` at ``version`` (there is only '1'), else 404."""
    if version != "1":
        raise HTTPException(404, f"model {name!r} has only version '1', not {version!r}")
    return model_for(name, ctx)


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


@router.get("/v2/models/{name}", tags=["v2"], responses=ERRORS, response_model=schemas.ModelMetadata)
def model_metadata(name: str, ctx: AppContext = Depends(context)) -> dict:
    return _metadata(model_for(name, ctx))


@router.get("/v2/models/{name}/versions/{version}", tags=["v2"], responses=ERRORS,
            response_model=schemas.ModelMetadata)  # fmt: skip
def model_version_metadata(name: str, version: str, ctx: AppContext = Depends(context)) -> dict:
    return _metadata(version_for(name, version, ctx))


@router.get("/v2/models/{name}/ready", tags=["v2"], responses=ERRORS, response_model=schemas.ModelReady)
def model_ready(name: str, ctx: AppContext = Depends(context)) -> dict:
    model_for(name, ctx)
    return {"name": name, "ready": True}


@router.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], responses=ERRORS,
            response_model=schemas.ModelReady)  # fmt: skip
def model_version_ready(name: str, version: str, ctx: AppContext = Depends(context)) -> dict:
    version_for(name, version, ctx)
    return {"name": name, "ready": True}


@router.post("/v2/models/{name}/infer", tags=["v2"], responses=_INFER_RESPONSES, openapi_extra=_INFER_BODY)
async def infer(name: str, request: Request, ctx: AppContext = Depends(context)) -> Response:
    return await _infer(model_for(name, ctx), request, ctx)


@router.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], responses=_INFER_RESPONSES,
             openapi_extra=_INFER_BODY)  # fmt: skip
async def infer_version(name: str, version: str, request: Request, ctx: AppContext = Depends(context)) -> Response:
    return await _infer(version_for(name, version, ctx), request, ctx)


async def _infer(p, request: Request, ctx: AppContext) -> Response:
    body = await request.body()
    args = (body, request.headers.get("inference-header-content-length"), p, ctx.config.max_batch)
    try:
        # A large JSON body takes ~10 ms a MB to parse: off the event loop, or every page and unlock waits.
        inline = len(body) <= PARSE_INLINE
        req = parse_infer_request(*args) if inline else await ctx.in_worker(parse_infer_request, *args)
    except V2Error as exc:
        return error_response(400, str(exc))
    start = time.perf_counter()
    probs = await ctx.in_worker(p.run, req.batch)
    ctx.metrics.inference.observe(time.perf_counter() - start)
    content, headers = encode_response(p, req, probs)
    return Response(content, headers=headers, media_type=headers.pop("content-type"))


# hand / face appear only for exports that have them (unset fields are left out, not sent as null)
@router.post("/predict", tags=["door"], responses=ERRORS, response_model=schemas.Prediction,
             response_model_exclude_unset=True, openapi_extra={"requestBody": _PREDICT_BODY})  # fmt: skip
async def predict(request: Request, ctx: AppContext = Depends(context)) -> dict:
    """Classify one image (multipart field ``file`` or the raw body). Never moves the door."""
    # (the docstring is /openapi.json's description.) An export with a face detector classifies the crop of the
    # largest face, as the door does, and says where it was (``face``); a hand-sign export says which hand it saw.
    data = await _image_bytes(request)
    p = ctx.holder.predictor
    try:  # decoded within the shared pixel budget, at the chain's working resolution (runtime.uploads)
        result, face = await ctx.in_worker(_predict, p, data, ctx.decodes)
    except ImageError as exc:
        return error_response(400, str(exc))
    except ToolkitError as exc:  # the export's detector file is damaged: nothing to answer with
        return error_response(500, str(exc))
    ctx.metrics.inference.observe(result.latency_ms / 1000.0)
    return {"model": p.name, **result.to_dict(), **face}


def _predict(p, data: bytes, budget):
    """The predictor's answer and, for an export with a detector, ``{"face": record or None}`` (else {}).

    Decoded within the shared pixel budget (:func:`~toolkit.runtime.uploads.decode_upload`); the latency covers
    decode, detection and classification.
    """
    start = time.perf_counter()
    detector = _detector(str(p.folder), (p.manifest.detector or {}).get("sha256"))
    if detector is None:
        result, face = p.predict(decode_upload(data, p, budget, "upload"), "upload"), {}
    else:
        image = decode_upload(data, p, budget, "upload")  # a detector export keeps a full frame
        found = detector.detect(image)
        if not found:
            result, face = p.predict(image, "upload"), {"face": None}
        else:
            best = max(found, key=lambda d: d.area)
            x0, y0, x1, y1 = square_crop_box(best.box, image.shape[:2], detector.margin)
            face = {"face": {"box": [round(float(v), 1) for v in best.box], "score": round(float(best.score), 4)}}
            result = p.predict(image[y0:y1, x0:x1], "upload")
    return dataclasses.replace(result, latency_ms=(time.perf_counter() - start) * 1000.0), face


@functools.lru_cache(maxsize=2)  # the serving export and, after a reload, the next one
def _detector(folder: str, sha256: str | None):
    """The export's own face detector (checked against its manifest), or None when it has none."""
    return load_detector(folder) if sha256 else None


async def _image_bytes(request: Request) -> bytes:
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        uploads = [v for v in form.values() if isinstance(v, UploadFile)]
        if not uploads:
            raise HTTPException(400, "multipart body has no file; send the image as form field 'file'")
        return await uploads[0].read()
    return await request.body()
