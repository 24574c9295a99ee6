"""A hand-sign export (pipeline "hands") at the door, TF-free: a fake tracker stands in for palm + landmarks.

The fake finds a hand in a frame unless it is dark; its 63 "features" put 10 at the index of the frame's
brightest colour channel, and the head (a real ONNX graph) is softmax(features @ I): red -> "0", green -> "5",
blue -> "9". With the real models (skipped without the mediapipe wheel) see tests/slow/test_hands.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from runtime_support import LiveServer, http_get, http_post, jpeg

from toolkit.errors import ToolkitError
from toolkit.inference import handpipe
from toolkit.inference.handfeatures import FeatureSpec
from toolkit.inference.manifest import FileEntry, InputSpec, Manifest, load_manifest, sha256_file
from toolkit.inference.predictor import Predictor
from toolkit.runtime.core.config import DoorConfig, ModelConfig, PolicyConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.door import DoorLoop

LABELS = ("0", "5", "9")
RED, GREEN, DARK = (200, 30, 30), (30, 200, 30), (10, 10, 10)
seen_sizes: list[tuple] = []


def fake_features(tracker, image, min_side=handpipe.MIN_SIDE, zoom_out=handpipe.ZOOM_OUT, spec=None,
                  turns=handpipe.TURNS):  # fmt: skip
    image = handpipe.upscale(np.asarray(image, np.uint8), min_side)
    seen_sizes.append(image.shape[:2])
    if image.mean() < 30:
        return None, None
    x = np.zeros(63, np.float32)
    x[int(np.argmax(image.reshape(-1, 3).mean(0)))] = 10.0
    hand = type("Hand", (), {"score": 0.97, "handedness": "right"})()
    return x, hand


@pytest.fixture(autouse=True)
def fake_tracker(monkeypatch):
    monkeypatch.setattr(handpipe, "open_tracker", lambda palm, landmark, threads=1, min_score=0.5, twins=None: object())
    monkeypatch.setattr(handpipe, "hand_features", fake_features)
    # The door follows the hand of a camera stream: the same fake judges each of its frames.
    monkeypatch.setattr(handpipe, "stream_features", lambda stream, image, min_side=handpipe.MIN_SIDE, spec=None:
                        fake_features(None, image, min_side, spec=spec))  # fmt: skip


def make_hands_export(folder: Path, labels=LABELS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "palm_detection_full.onnx").write_bytes(b"palm")
    (folder / "hand_landmark_full.onnx").write_bytes(b"landmark")
    k = len(labels)
    kernel = np.eye(63, k, dtype=np.float32)
    last = "Softmax" if k > 2 else "Sigmoid"
    nodes = [helper.make_node("MatMul", ["features", "kernel"], ["logits"]),
             helper.make_node(last, ["logits"], ["probs"], **({"axis": -1} if k > 2 else {}))]
    if k == 2:
        kernel = kernel[:, 1:] - kernel[:, :1]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 63])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", kernel.shape[1]])],
                              [helper.make_tensor("kernel", TensorProto.FLOAT, kernel.shape, kernel.ravel())])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "head.onnx")
    entry = FileEntry(format="onnx", quantization="none", sha256=sha256_file(folder / "head.onnx"),
                      bytes=(folder / "head.onnx").stat().st_size)
    hands = {"files": {"palm": "palm_detection_full.onnx", "landmark": "hand_landmark_full.onnx"},
             "sha256": {r: sha256_file(folder / f) for r, f in (("palm", "palm_detection_full.onnx"),
                                                                 ("landmark", "hand_landmark_full.onnx"))},
             "min_side": 256, "features": FeatureSpec().record()}
    Manifest(name="signs", model="hands", labels=labels, input=InputSpec(shape=(None, 256, 256, 3)),
             output_kind="softmax" if k > 2 else "sigmoid", files={"head.onnx": entry}, serve="head.onnx",
             pipeline="hands", hands=hands).write(folder)
    return folder


def image(colour, size=(64, 64)) -> np.ndarray:
    return np.full((*size, 3), colour, np.uint8)


def test_predictor_answers_the_sign_or_no_hand(tmp_path):
    p = Predictor(make_hands_export(tmp_path / "signs"))
    seen_sizes.clear()
    green = p.predict(image(GREEN))
    assert green.label == "5" and green.probability > 0.99 and green.to_dict()["hand"]["handedness"] == "right"
    assert seen_sizes == [(256, 256)]  # a 64x64 photo is upscaled before tracking
    none = p.predict(image(DARK))
    assert none.label == "no_hand" and none.probability == 1.0 and none.to_dict()["hand"] is None
    assert none.probabilities == {"0": 0.0, "5": 0.0, "9": 0.0, "no_hand": 1.0}
    d = p.describe()
    assert d["labels"] == ["0", "5", "9", "no_hand"] and d["output"]["shape"] == [-1, 4]
    rows = p.run(np.stack([image(RED, (256, 256)), image(DARK, (256, 256))]).astype(np.float32))
    assert rows.shape == (2, 4) and rows[0].argmax() == 0 and rows[1].tolist() == [0, 0, 0, 1]


def test_binary_hands_export_no_hand_is_not_a_yes(tmp_path):
    p = Predictor(make_hands_export(tmp_path / "two", labels=("fist", "palm")))
    yes, none = p.predict(image(GREEN)), p.predict(image(DARK))
    assert yes.label == "palm" and yes.decision is True
    assert none.label == "no_hand" and none.decision is False


def test_tampered_tracker_file_and_old_manifests(tmp_path, export_dir):
    folder = make_hands_export(tmp_path / "signs")
    (folder / "hand_landmark_full.onnx").write_bytes(b"changed")
    with pytest.raises(ToolkitError, match="sha256 does not match hands.sha256"):
        Predictor(folder)
    raw = json.loads((export_dir / "manifest.json").read_text())
    raw.pop("pipeline", None), raw.pop("hands", None)  # a manifest from before hand signs
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(raw))
    old = load_manifest(tmp_path / "old")
    assert old.pipeline == "" and old.hands == {}
    raw["pipeline"] = "pose"
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ToolkitError, match="field 'pipeline'"):
        load_manifest(tmp_path / "old")


def test_predictor_refuses_a_head_on_other_hand_features(tmp_path):
    folder = make_hands_export(tmp_path / "signs")
    raw = json.loads((folder / "manifest.json").read_text())
    raw["hands"]["features"]["version"] = "hands-2"  # a head fitted on the features before they were turned upright
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ToolkitError, match=r"signs/manifest.json: the head reads hand features hands-2, this toolkit "
                                           r"computes hands-4; run 'toolkit finetune hands'"):
        Predictor(folder)
    raw["hands"]["features"] = FeatureSpec("points+angles").record()  # 93 numbers for a head that reads 63
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ToolkitError, match="the head reads 63 features, hands.features in .* says 93"):
        Predictor(folder)


def test_server_predict_and_v2_metadata_say_no_hand(tmp_path):
    from toolkit.runtime.server import create_app

    folder = make_hands_export(tmp_path / "signs")
    app = create_app(ModelHolder(ModelConfig(folder)), ServeConfig(), door=None, token=None)
    with LiveServer(app) as srv:
        r = http_post(srv.url + "/predict", jpeg(10), headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and r.json()["label"] == "no_hand", r.text
        assert r.json()["hand"] is None and "face" not in r.json()  # issue 23, defect 6: the hand field is kept
        r = http_post(srv.url + "/predict", jpeg(200, (80, 80)), headers={"content-type": "image/jpeg"})
        assert r.json()["label"] in LABELS and r.json()["hand"] == {"score": 0.97, "handedness": "right"}
        props = http_get(srv.url + "/openapi.json").json()["components"]["schemas"]["Hand"]["properties"]
        assert set(props) == {"score", "handedness"}
        meta = http_get(srv.url + "/v2/models/signs").json()
        assert meta["parameters"]["labels"][-1] == "no_hand" and meta["outputs"][0]["shape"] == [-1, 4]


class Frames:
    live = False

    def __init__(self, frames) -> None:
        self.frames = list(frames)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self):
        return self.frames.pop(0) if self.frames else None


def test_door_opens_on_the_chosen_sign_only(tmp_path):
    from toolkit.runtime.actuator import LogActuator

    folder = make_hands_export(tmp_path / "signs")
    t = [0.0]

    def run(frames, open_on="5"):
        cfg = DoorConfig(camera="x", policy=PolicyConfig(k=2, n=3, open_on=open_on, stale_seconds=100))
        loop = DoorLoop(ModelHolder(ModelConfig(folder)), Frames(frames), cfg, LogActuator(), clock=lambda: t[0])
        states = []
        while loop.step():
            states.append(loop.policy.is_open())
        return states

    big = (120, 160)
    assert run([image(RED, big)] * 4) == [False] * 4  # another sign never opens
    assert run([image(GREEN, big), image(DARK, big), image(DARK, big)]) == [False] * 3  # no hand: no vote
    assert run([image(GREEN, big), image(DARK, big), image(GREEN, big)]) == [False, False, True]
    with pytest.raises(ToolkitError, match="--open-on 7: .* no such label"):
        run([], open_on="7")
    with pytest.raises(ToolkitError, match="binary"):  # a multi-class export needs --open-on
        run([], open_on=None)


def test_a_hand_filling_the_photo_gets_a_second_look_zoomed_out(monkeypatch):
    """The real pipeline function with a tracker that only sees hands with room around them."""
    from toolkit.inference.hands import Hand

    monkeypatch.undo()  # the real hand_features, not the fake
    looks = []

    class Tracker:
        def track(self, img, zoom=0.0, degrees=0.0):
            looks.append((img.shape[:2], zoom, degrees))
            if img.shape[0] == 256:
                return None  # the close-up: too big for the palm detector
            points = np.stack([np.linspace(200, 300, 21), np.linspace(150, 250, 21), np.zeros(21)], 1)
            return Hand(points.astype(np.float32), 0.9, "right", 0.8)

    x, hand = handpipe.hand_features(Tracker(), image(GREEN), 256, 0.5)
    assert looks == [((256, 256), 0, 0), ((512, 512), 0, 0)] and x.shape == (63,)
    assert hand.points[0, :2].tolist() == [200 - 128, 150 - 128]  # back in the photo's own pixels
    looks.clear()
    assert handpipe.hand_features(Tracker(), image(GREEN), 256, 0.0, turns=()) == (None, None)  # no second look
    assert looks == [((256, 256), 0, 0)]


def test_a_turned_hand_gets_turned_looks_after_the_plain_and_zoomed_out_ones(monkeypatch):
    """Views turned +-30 degrees, plain then zoomed out, only once the others found nothing; the first hit wins."""
    from toolkit.inference.hands import Hand

    monkeypatch.undo()
    looks = []

    class Tracker:
        def __init__(self, sees):
            self.sees = sees

        def track(self, img, zoom=0.0, degrees=0.0):
            looks.append((img.shape[0], zoom, degrees))
            if (zoom, degrees) != self.sees:
                return None
            points = np.stack([np.linspace(20, 60, 21), np.linspace(10, 50, 21), np.zeros(21)], 1)
            return Hand(points.astype(np.float32), 0.9, "right", 0.8)

    x, hand = handpipe.hand_features(Tracker((0.5, -30.0)), image(GREEN), 256, 0.5)
    assert looks == [(256, 0, 0), (512, 0, 0), (256, 0.0, 30.0), (256, 0.0, -30.0), (256, 0.5, 30.0),
                     (256, 0.5, -30.0)]  # fmt: skip
    assert x.shape == (63,) and hand.points[0, :2].tolist() == [20, 10]  # the image's own pixels, as found
    looks.clear()
    assert handpipe.hand_features(Tracker((9, 9)), image(GREEN), 256, 0.0) == (None, None)
    assert looks == [(256, 0, 0), (256, 0.0, 30.0), (256, 0.0, -30.0)]  # no zoomed-out look, turned ones plain


def test_a_manifest_with_bad_turns_is_one_clear_line():
    with pytest.raises(ToolkitError, match=r"manifest.json: field 'hands.turns' must be a list of degrees"):
        handpipe.turns_of({"turns": "30"}, "x/manifest.json")
    assert handpipe.turns_of({}, "x") == () and handpipe.turns_of({"turns": [30, -30.5]}, "x") == (30.0, -30.5)


def test_door_run_open_on_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    from toolkit.cli import main

    folder = make_hands_export(tmp_path / "signs")
    cam = tmp_path / "cam"
    cam.mkdir()
    for i, colour in enumerate((GREEN, DARK, GREEN, GREEN)):
        Image.fromarray(image(colour, (120, 160))).save(cam / f"{i:03d}.png")
    log = tmp_path / "events.jsonl"
    assert main(["door", "run", "--model", str(folder), "--camera", str(cam), "--open-on", "5", "--votes", "2",
                 "--window", "3", "--event-log", str(log), "--quiet"]) == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["decision"] for e in events[:4]] == ["locked", "locked", "open", "open"]
    assert events[1]["probability"] is None  # the frame without a hand voted no
    assert main(["door", "run", "--model", str(folder), "--camera", str(cam), "--open-on", "six"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --open-on six:") and "choose one of 0, 5, 9" in err


def test_the_door_follows_the_hand_of_its_camera_unless_told_not_to(tmp_path, monkeypatch):
    from toolkit.runtime.actuator import LogActuator

    folder = make_hands_export(tmp_path / "signs")
    streams = []
    monkeypatch.setattr(handpipe, "stream_features", lambda stream, image, min_side=256, spec=None: (
        streams.append(stream), fake_features(None, image, min_side, spec=spec))[1])  # fmt: skip

    def run(track: bool, frames):
        cfg = DoorConfig(camera="x", policy=PolicyConfig(k=2, n=3, open_on="5", stale_seconds=100), track=track)
        loop = DoorLoop(ModelHolder(ModelConfig(folder)), Frames(frames), cfg, LogActuator(), clock=lambda: 0.0)
        while loop.step():
            pass
        return loop

    loop = run(True, [image(GREEN, (120, 160))] * 3)
    assert len(streams) == 3 and streams[0] is streams[1] is streams[2]  # one stream state for the camera
    loop.fault("camera: unplugged")  # a gap in the stream: the next frame starts from the palm detector
    loop.source.frames = [image(GREEN, (120, 160))]
    loop.step()
    assert streams[3] is not streams[2]
    streams.clear()
    run(False, [image(GREEN, (120, 160))] * 2)
    assert streams == []  # --no-track: each frame judged alone, like a photo
