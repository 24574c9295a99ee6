"""``toolkit door adapt`` TF-free: a tiny base.onnx + head.onnx chain (adapt_support) whose "new camera" adds a red
cast, so the shipped head accepts everyone and a head refitted on that camera's labelled photos does not; versions,
rollback, the guard rails and a hand-sign export (a fake tracker, as in test_runtime_hands)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from adapt_support import camera_photo, make_chain_export, write_labelled
from runtime_support import make_export

from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.inference import handpipe, versions
from toolkit.inference.predictor import Predictor
from toolkit.runtime import adapt as A
from toolkit.runtime.core.config import ModelConfig
from toolkit.runtime.core.holder import ModelHolder

LABELS = ("no_smile", "smile")
CAST = 90.0


def config(tmp_path, export, data, **kw) -> A.AdaptConfig:
    return A.AdaptConfig(model=export, data=data, state=tmp_path / "state", niceness=0, **kw)


def accuracy(predictor, cast=CAST, n=30, seed=7) -> float:
    rng = np.random.default_rng(seed)
    ys = np.arange(n) % 2
    got = [predictor.predict(camera_photo(int(y), rng, cast)).decision for y in ys]
    return float(np.mean(np.asarray(got) == ys.astype(bool)))


def test_adapt_writes_a_version_that_fixes_the_new_camera(tmp_path):
    export = make_chain_export(tmp_path / "export")
    data = write_labelled(tmp_path / "labelled", LABELS, 20, cast=CAST)
    lines = []
    record = A.adapt(config(tmp_path, export, data), log=lines.append)
    assert record["id"] == "v1" and versions.current(tmp_path / "state") == "v1"
    assert record["counts"] == {"no_smile": 20, "smile": 20}
    assert record["threshold_source"] == "owner-labelled snapshots"
    assert record["parent"]["sha256"] == Predictor(export).manifest.files["head.onnx"].sha256
    assert record["current_accuracy"] == pytest.approx(0.5) and record["cv"]["accuracy"] >= 0.9
    lo, hi = record["cv"]["interval_95"]
    assert lo < record["cv"]["accuracy"] <= hi
    assert 0 <= record["threshold"] <= 1 and record["far_upper_95"] >= record["far"]
    assert record["thresholds"]["smile"]["visit"]["identical_frames"] == record["far_upper_95"]
    assert any("cross-validated accuracy" in line for line in lines)
    adapted = Predictor(export, version=versions.version_dir(tmp_path / "state", "v1"))
    assert adapted.version["id"] == "v1" and adapted.threshold == record["threshold"]
    assert accuracy(Predictor(export)) <= 0.6  # the shipped head opens for (nearly) everyone here
    assert accuracy(adapted) >= 0.9


def test_guard_rails_refuse_in_one_line_unless_forced(tmp_path, monkeypatch):
    export = make_chain_export(tmp_path / "export")
    few = write_labelled(tmp_path / "few", LABELS, 6, cast=CAST)
    with pytest.raises(ToolkitError, match="fewer than 10") as err:
        A.adapt(config(tmp_path, export, few), log=lambda s: None)
    assert "\n" not in str(err.value) and not (tmp_path / "state" / "adapt" / "versions" / "v1").exists()
    record = A.adapt(config(tmp_path, export, few, force=True), log=lambda s: None)
    assert record["forced"] is True
    lopsided = write_labelled(tmp_path / "lop", LABELS, 10, cast=CAST)
    for i in range(10, 101):  # 101 smiles, 10 others
        (lopsided / "smile" / f"copy-{i}.png").write_bytes((lopsided / "smile" / "snap-000.png").read_bytes())
    with pytest.raises(ToolkitError, match="over 90"):
        A.adapt(config(tmp_path, export, lopsided, force=False), log=lambda s: None)

    real = A.logreg.cross_validate

    def worse(*args, **kw):  # a refit that scores below the head already serving on the same photos
        cv = real(*args, **kw)
        cv.accuracies = [0.2] * len(cv.accuracies)
        return cv

    monkeypatch.setattr(A.logreg, "cross_validate", worse)
    good = write_labelled(tmp_path / "good", LABELS, 12, cast=0.0)  # the shipped head is right on these
    with pytest.raises(ToolkitError, match="below the current head"):
        A.adapt(config(tmp_path, export, good), log=lambda s: None)


def test_a_fully_trained_export_says_it_cannot_be_adapted(tmp_path):
    export = make_export(tmp_path / "plain")
    data = write_labelled(tmp_path / "labelled", LABELS, 10)
    with pytest.raises(ToolkitError, match="cannot refit it") as err:
        A.adapt(config(tmp_path, export, data), log=lambda s: None)
    assert "\n" not in str(err.value)
    assert main(["door", "adapt", "--model", str(export), "--data", str(data), "--state", str(tmp_path / "s")]) == 2


def test_bad_labelled_folders_name_the_folder(tmp_path):
    export = make_chain_export(tmp_path / "export")
    data = write_labelled(tmp_path / "labelled", LABELS, 10)
    (data / "cat").mkdir()
    with pytest.raises(ToolkitError, match="'cat' is not a label"):
        A.adapt(config(tmp_path, export, data), log=lambda s: None)
    (data / "cat").rmdir()
    os.symlink(data / "smile" / "snap-000.png", data / "smile" / "link.png")  # a symlink is not followed
    files, _, _ = A.labelled_files(data, LABELS)
    assert all(f.name != "link.png" for f in files) and len(files) == 20


def test_versions_switch_roll_back_and_refuse_another_export(tmp_path):
    export = make_chain_export(tmp_path / "export")
    state = tmp_path / "state"
    data = write_labelled(tmp_path / "labelled", LABELS, 12, cast=CAST)
    holder = ModelHolder(ModelConfig(export, state=state))
    assert holder.predictor.version is None
    A.adapt(config(tmp_path, export, data), log=lambda s: None)
    A.adapt(config(tmp_path, export, data, prior="no"), log=lambda s: None)
    assert versions.version_ids(state) == ["v1", "v2"] and versions.current(state) == "v2"
    assert holder.changed() and holder.reload() and holder.predictor.version["id"] == "v2"
    assert ModelHolder(ModelConfig(export, state=state)).predictor.version["id"] == "v2"  # a restart keeps it
    assert versions.rollback(state) == "v1" and versions.rollback(state) is None
    with pytest.raises(ToolkitError, match="nothing to roll back"):
        versions.rollback(state)
    versions.choose(state, "v2")
    versions.delete(state, "v2")  # the serving one: back to the one before
    assert versions.current(state) is None and versions.version_ids(state) == ["v1"]
    versions.choose(state, "v1")
    (state / "adapt" / "versions" / "v1" / "head.json").write_text('{"kernel": [[0], [0], [0]], "bias": [9]}')
    with pytest.raises(ToolkitError, match="changed since"):
        versions.read_version(state / "adapt" / "versions" / "v1")
    fallback = ModelHolder(ModelConfig(export, state=state))  # a tampered version: the export's head serves
    assert fallback.predictor.version is None and "v1" in fallback.version_error
    other = make_chain_export(tmp_path / "other", kernel=((1.0,), (-1.0,), (0.5,)))
    A.adapt(config(tmp_path, export, data), log=lambda s: None)
    with pytest.raises(ToolkitError, match="not this export"):
        Predictor(other, version=versions.version_dir(state, versions.current(state)))


def test_a_state_path_that_cannot_hold_versions_is_one_plain_line(tmp_path, capsys):
    export = make_chain_export(tmp_path / "export")
    data = write_labelled(tmp_path / "labelled", LABELS, 10)
    (tmp_path / "state").write_text("a file, not a folder")  # what root meets where a user meets a mode
    rc = main(["door", "adapt", "--model", str(export), "--data", str(data), "--state", str(tmp_path / "state")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot write the door's state there as user" in err[0]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_state_folder_is_one_plain_line(tmp_path, capsys):
    export = make_chain_export(tmp_path / "export")
    data = write_labelled(tmp_path / "labelled", LABELS, 10)
    state = tmp_path / "state"
    state.mkdir(mode=0o500)
    try:
        rc = main(["door", "adapt", "--model", str(export), "--data", str(data), "--state", str(state)])
    finally:
        state.chmod(0o700)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot write the door's state there as user" in err[0]


def test_cli_adapt_versions_rollback_and_forget(tmp_path, capsys):
    export = make_chain_export(tmp_path / "export")
    data = write_labelled(tmp_path / "labelled", LABELS, 10, cast=CAST)
    state = str(tmp_path / "state")
    assert main(["door", "adapt", "--model", str(export), "--data", str(data), "--state", state]) == 0
    assert "wrote version v1" in capsys.readouterr().out
    assert main(["door", "versions", "--state", state]) == 0
    assert capsys.readouterr().out.startswith("* v1")
    assert main(["door", "rollback", "--state", state]) == 0 and versions.current(state) is None
    assert main(["door", "rollback", "--state", state, "--to", "v1"]) == 0 and versions.current(state) == "v1"
    assert main(["door", "forget", "--data", str(data), "smile/snap-000.png"]) == 0
    assert not (data / "smile" / "snap-000.png").exists()
    assert main(["door", "forget", "--data", str(data), "../export/manifest.json"]) == 2
    assert (export / "manifest.json").is_file()


def fake_hand_features(tracker, image, min_side=handpipe.MIN_SIDE, zoom_out=handpipe.ZOOM_OUT, spec=None,
                       turns=handpipe.TURNS):  # fmt: skip
    """No hand in a dark photo; else 63 features: the channel means / 25, then zeros."""
    image = np.asarray(image, np.uint8)
    if image.mean() < 20:
        return None, None
    x = np.zeros(63, np.float32)
    x[:3] = image.reshape(-1, 3).mean(0) / 25.0
    return x, type("Hand", (), {"score": 0.9, "handedness": "right"})()


def test_a_hand_sign_export_refits_and_no_hand_photos_are_not_training_data(tmp_path, monkeypatch):
    from test_runtime_hands import make_hands_export

    monkeypatch.setattr(handpipe, "open_tracker", lambda palm, landmark, threads=1, min_score=0.5, twins=None: object())
    monkeypatch.setattr(handpipe, "hand_features", fake_hand_features)
    signs = ("0", "5", "9")
    export = make_hands_export(tmp_path / "signs", labels=signs)
    data = write_labelled(tmp_path / "labelled", signs, 12, cast=40.0)
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(data / "5" / "dark.png")  # no hand in it
    (data / "no_hand").mkdir()
    Image.fromarray(np.full((64, 64, 3), 99, np.uint8)).save(data / "no_hand" / "x.png")
    lines = []
    record = A.adapt(config(tmp_path, export, data), log=lines.append)
    assert record["counts"] == {"0": 12, "5": 12, "9": 12} and record["no_features"] == 1
    assert record["skipped"] == {"no_hand": 1} and record["cv"]["accuracy"] >= 0.9
    assert set(record["thresholds"]) == set(signs) and record["threshold"] is None
    p = Predictor(export, version=versions.version_dir(tmp_path / "state", "v1"))
    assert set(p.label_thresholds) == set(signs)
    from types import SimpleNamespace

    from toolkit.runtime.core.config import PolicyConfig
    from toolkit.runtime.door import DoorLoop

    door = SimpleNamespace(config=SimpleNamespace(policy=PolicyConfig(open_on="5")))
    assert DoorLoop._threshold(door, p) == record["thresholds"]["5"]["threshold"]  # --open-on 5: its own threshold
    assert DoorLoop._threshold(door, Predictor(export)) == 0.5  # the export's head: the door's default
    assert p.predict(np.zeros((64, 64, 3), np.uint8)).label == handpipe.NO_HAND  # still a vote against
    json.dumps(record)  # the record is plain JSON


def test_evaluate_scores_the_chosen_version_with_state(tmp_path, capsys):
    export = make_chain_export(tmp_path / "export")
    data = write_labelled(tmp_path / "labelled", LABELS, 10, cast=CAST)
    others = write_labelled(tmp_path / "others", LABELS, 15, cast=CAST, seed=9)
    state = str(tmp_path / "state")
    with pytest.raises(ToolkitError, match="no adapted version"):
        from toolkit.bench.accuracy import evaluate_export

        evaluate_export(str(export), data=str(others), state=state)
    A.adapt(config(tmp_path, export, data), log=lambda s: None)
    capsys.readouterr()
    assert main(["evaluate", str(export), "--data", str(others)]) == 0
    before = float(capsys.readouterr().out.split()[1])
    assert main(["evaluate", str(export), "--data", str(others), "--state", state]) == 0
    after = float(capsys.readouterr().out.split()[1])
    assert before <= 0.6 and after >= 0.9
