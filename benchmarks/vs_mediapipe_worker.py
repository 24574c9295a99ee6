"""One side of ``python -m benchmarks.vs_mediapipe``: runs one chain per request, times it, answers in JSON.

Run as a script (``python benchmarks/vs_mediapipe_worker.py SIDE FRAMES_DIR``), so the same file serves the
toolkit's venv (SIDE ``toolkit``; imports ``toolkit`` from PYTHONPATH, which may be an older checkout) and the
throwaway mediapipe venv (SIDE ``mediapipe``; only numpy and mediapipe there). Standard library + numpy at the top.

Protocol: one JSON line per request on stdin, ``{"row": NAME, "i": FRAME}``; one line back,
``{"ms": milliseconds, "found": bool}``. ``{"stages": true}`` asks the toolkit side for its per-stage times.
Rows (frames from FRAMES_DIR/ROW.npy, in order: the moving rows are sequences):

- ``moving hand``: the door's hand chain on a hand moving across the frame; mediapipe's video mode.
- ``palm every frame``: a photo's chain (palm detector on every frame); mediapipe's static mode.
- ``no hand``: the door's chain on frames without a hand; mediapipe's video mode.
- ``face detector``: BlazeFace on a face; mediapipe's FaceDetection (short range).
- ``face mesh moving``: the door's face chain up to the landmarks (detector, then the face followed:
  toolkit.inference.facetrack) on the face moving across the frame; mediapipe's FaceMesh in video mode
  (``refine_landmarks=False``: the same 468-point model).
- ``face mesh every frame``: a photo's face chain (detector + face mesh on every frame); FaceMesh static mode.
- ``no face``: the door's face chain on the wall without a face; FaceMesh video mode.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROWS = ("moving hand", "palm every frame", "no hand", "face detector", "face mesh moving", "face mesh every frame",
        "no face")


# Rows that time other chains on another row's frames (one file each on disk and in memory)
SAME_FRAMES = {"palm every frame": "moving hand", "face mesh moving": "face detector",
               "face mesh every frame": "face detector", "no face": "no hand"}


def _file(row: str) -> str:
    return SAME_FRAMES.get(row, row).replace(" ", "_") + ".npy"


def _mediapipe_chains() -> dict:
    import mediapipe as mp

    def hands(static: bool):
        return mp.solutions.hands.Hands(static_image_mode=static, max_num_hands=1, model_complexity=1,
                                        min_detection_confidence=0.5, min_tracking_confidence=0.5)  # fmt: skip

    video, static, empty = hands(False), hands(True), hands(False)
    faces = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)

    def mesh(static: bool):
        return mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=1, refine_landmarks=False,
                                               min_detection_confidence=0.5, min_tracking_confidence=0.5)  # fmt: skip

    mesh_video, mesh_static, mesh_empty = mesh(False), mesh(True), mesh(False)
    return {
        "face mesh moving": lambda f: bool(mesh_video.process(f).multi_face_landmarks),
        "face mesh every frame": lambda f: bool(mesh_static.process(f).multi_face_landmarks),
        "no face": lambda f: bool(mesh_empty.process(f).multi_face_landmarks),
        "moving hand": lambda f: bool(video.process(f).multi_hand_landmarks),
        "palm every frame": lambda f: bool(static.process(f).multi_hand_landmarks),
        "no hand": lambda f: bool(empty.process(f).multi_hand_landmarks),
        "face detector": lambda f: bool(faces.process(f).detections),
    }


def _toolkit_chains() -> tuple[dict, object]:
    from toolkit.inference import handpipe
    from toolkit.inference.detect import FaceDetector
    from toolkit.inference.detector_files import cached_detector_path
    from toolkit.models.hands import ensure_hand_models

    models = ensure_hand_models()
    # The door's runtimes: each model's .tflite under LiteRT when the checkout has them (toolkit.inference.litert)
    twins = getattr(models, "twins", None)
    tracker = handpipe.open_tracker(models.palm, models.landmark, threads=1, **({"twins": twins} if twins else {}))
    mesh_chains, mesh = _toolkit_face_mesh()
    detector_twin = getattr(mesh.detector.session, "path", None) if hasattr(models, "twins") else None
    faces = FaceDetector(cached_detector_path(), threads=1, **({"twin": detector_twin} if detector_twin else {}))

    def photo(f):
        return handpipe.hand_features(tracker, f, handpipe.MIN_SIDE, handpipe.ZOOM_OUT)[0] is not None

    try:  # the door's chain follows the hand; a checkout from before tracking judged each frame as a photo
        from toolkit.inference.handtrack import HandStream

        looks = (handpipe.ZOOM_OUT, *([handpipe.TURNS] if hasattr(handpipe, "TURNS") else []))  # as the door's
        moving, empty = HandStream(tracker, *looks), HandStream(tracker, *looks)

        def door(stream):
            return lambda f: handpipe.stream_features(stream, f, handpipe.MIN_SIDE)[0] is not None

        door_moving, door_empty = door(moving), door(empty)
    except ImportError:
        door_moving = door_empty = photo
    chains = {"moving hand": door_moving, "palm every frame": photo, "no hand": door_empty,
              "face detector": lambda f: bool(faces.detect(f)), **mesh_chains}  # fmt: skip
    return chains, (tracker, faces, mesh)


def _toolkit_face_mesh() -> tuple[dict, object]:
    """The face chain up to the landmarks: the door's (followed) and a photo's (detector every frame)."""
    from toolkit.inference.detect import FaceDetector
    from toolkit.inference.facemesh import FaceMesh
    from toolkit.inference.facepipe import TILES
    from toolkit.models.facemesh import ensure_face_mesh

    models = ensure_face_mesh()
    twins = getattr(models, "twins", None)
    if twins is None:  # a checkout from before the LiteRT twins
        mesh = FaceMesh(models.landmark, FaceDetector(models.detector, threads=1, tiles=TILES), threads=1)
    else:
        detector = FaceDetector(models.detector, threads=1, tiles=TILES, twin=twins.get("detector"))
        mesh = FaceMesh(models.landmark, detector, threads=1, twin=twins.get("landmark"))
    try:  # a checkout from before face tracking judged each frame as a photo
        from toolkit.inference.facetrack import FaceStream

        moving, empty = FaceStream(mesh, mesh.detector), FaceStream(mesh, mesh.detector)
        door_moving, door_empty = (lambda f: moving.track(f) is not None), (lambda f: empty.track(f) is not None)
    except ImportError:
        door_moving = door_empty = lambda f: mesh.track(f) is not None
    return {"face mesh moving": door_moving, "face mesh every frame": lambda f: mesh.track(f) is not None,
            "no face": door_empty}, mesh


def _median_ms(fn, reps: int = 25) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def toolkit_stages(models, frames: dict) -> dict:
    """Median ms of each stage of the toolkit's chains on the first frame of a row (older checkouts: what exists)."""
    from toolkit.inference import detect, hands

    tracker, faces, mesh = models
    frame = frames["moving hand"][0]
    hand = tracker.track(frame)
    out = {}
    if hasattr(hands, "letterbox_sample"):
        out["palm letterbox"] = _median_ms(lambda: hands.letterbox_sample(frame))
        x = hands.letterbox_sample(frame)[0]
    else:
        corner, side = hands.letterbox_axes(*frame.shape[:2])
        step = side / hands.PALM_SIZE
        args = (frame, corner, np.array([step, 0.0]), np.array([0.0, step]), hands.PALM_SIZE, False)
        out["palm letterbox"] = _median_ms(lambda: hands.warp(*args))
        x = (hands.warp(*args) / 255.0)[None].astype(np.float32)
    name = tracker.palm.get_inputs()[0].name
    out["palm model"] = _median_ms(lambda: tracker.palm.run(None, {name: x}))
    reg, logits = tracker.palm.run(None, {name: x})
    out["palm decode + NMS"] = _median_ms(lambda: detect.weighted_nms(*detect.decode(
        reg, logits, tracker.anchors, hands.PALM_SIZE, tracker.min_score), hands.NMS_IOU))
    axes = hand.rect.axes(hands.LANDMARK_SIZE)
    if hasattr(hands, "sample"):
        out["landmark crop"] = _median_ms(lambda: hands.sample(frame, *axes, hands.LANDMARK_SIZE, replicate=True))
        y = hands.sample(frame, *axes, hands.LANDMARK_SIZE, replicate=True)
    else:
        out["landmark crop"] = _median_ms(lambda: hands.warp(frame, *axes, hands.LANDMARK_SIZE, replicate=True))
        y = (hands.warp(frame, *axes, hands.LANDMARK_SIZE, replicate=True) / 255.0)[None].astype(np.float32)
    name = tracker.landmark.get_inputs()[0].name
    out["landmark model"] = _median_ms(lambda: tracker.landmark.run(None, {name: y}))
    out["features"] = _median_ms(lambda: hands.features(hand))
    face = frames["face detector"][0]
    out["face letterbox"] = _median_ms(lambda: detect.letterbox(face))
    z = detect.letterbox(face)[0]
    out["face model"] = _median_ms(lambda: faces.session.run([faces._reg, faces._cls], {faces._input: z}))
    from toolkit.inference import facemesh

    found = mesh.track(face)
    if found is not None:
        out["face landmark crop"] = _median_ms(lambda: facemesh.warp(face, found.rect, facemesh.LANDMARK_SIZE))
        x = (facemesh.warp(face, found.rect, facemesh.LANDMARK_SIZE) / 255.0)[None].astype(np.float32)
        out["face landmark model"] = _median_ms(lambda: mesh.session.run(None, {mesh._input: x}))
    for name, session in (("palm", tracker.palm), ("hand landmarks", tracker.landmark), ("face detector",
                          faces.session), ("face mesh detector", mesh.detector.session), ("face mesh", mesh.session)):
        out[f"runtime {name}"] = getattr(session, "runtime", "onnxruntime")  # older checkouts: onnxruntime only
    return out


def main(side: str, folder: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    loaded = {name: np.load(Path(folder) / name) for name in {_file(row) for row in ROWS}}
    frames = {row: loaded[_file(row)] for row in ROWS}
    if side == "mediapipe":
        chains, models = _mediapipe_chains(), None
    else:
        chains, models = _toolkit_chains()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("stages"):
            print(json.dumps({"stages": toolkit_stages(models, frames) if models else {}}), flush=True)
            continue
        frame = frames[request["row"]][request["i"]]
        start = time.perf_counter()
        found = chains[request["row"]](frame)
        ms = (time.perf_counter() - start) * 1000
        print(json.dumps({"ms": ms, "found": bool(found)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
