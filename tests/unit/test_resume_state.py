"""The resume state's checkpoints and state.json, and the training benchmark's statistics and turns."""

import json
import threading

import numpy as np
import pytest

from benchmarks.train_overhead import _OtherSideFailed, _Turns, paired_ratio
from toolkit.errors import ToolkitError
from toolkit.train import resume


def _model(seed: int = 0, classes: int = 2):
    from toolkit._keras import keras
    from toolkit.models import build_model
    from toolkit.train.fit import compile_model

    keras().utils.set_random_seed(seed)
    model = build_model("happy", (32, 32, 3), classes)
    compile_model(model, classes, "adam", 1e-3)
    return model


def test_paired_ratio_and_its_interval():
    b = np.array([6.0, 6.5, 7.0, 6.2, 6.8, 6.4])
    assert paired_ratio(0.9 * b, b) == pytest.approx((0.9, 0.9, 0.9))
    noisy = b * np.array([0.97, 1.04, 0.99, 1.02, 0.96, 1.01])
    mid, low, high = paired_ratio(noisy, b)
    assert low <= mid <= high and low < 1.0 < high


def test_a_failed_side_releases_the_one_waiting_for_its_turn():
    turns = _Turns(["toolkit", "plain", "toolkit", "plain"])
    turns.wait_for("toolkit")  # its turn: returns at once
    failure = []

    def next_toolkit_epoch():
        try:
            turns.wait_for("toolkit")
        except _OtherSideFailed as e:
            failure.append(e)

    turns.done()  # the plain side's turn now
    waiter = threading.Thread(target=next_toolkit_epoch)
    waiter.start()
    turns.break_()  # ... and it fails
    waiter.join(timeout=10)
    assert not waiter.is_alive() and failure


@pytest.mark.parametrize("validate", [True, False])
def test_every_epochs_state_holds_the_weights_at_that_epochs_end(validate, tmp_path):
    """What state.json names is that epoch's model and optimizer, restored whole into a fresh model, though the
    writer thread saves it while the next epoch already changes the weights."""
    from toolkit._keras import keras

    model = _model()
    folder = tmp_path / "backup"
    state = resume.ResumeState(model, folder, "val_loss" if validate else "loss", None)
    fresh = _model(seed=1)
    again = resume.ResumeState(fresh, folder, "loss", None)  # restores into fresh, again and again
    seen = []

    class Check(keras().callbacks.Callback):
        expected = None

        def on_epoch_end(self, epoch, logs=None):
            self.expected = (epoch, model.get_weights(), int(model.optimizer.iterations.numpy()))

        def on_train_batch_end(self, batch, logs=None):
            if batch == 0 and self.expected is not None:  # the next epoch's first step has changed the weights
                self.compare()

        def on_train_end(self, logs=None):
            self.compare()

        def compare(self):
            epoch, weights, steps = self.expected
            self.expected = None
            state.sync()
            recorded = json.loads((folder / resume.STATE).read_text())
            back = again.restore()
            same = all(np.array_equal(a, b) for a, b in zip(weights, fresh.get_weights()))
            seen.append((recorded["epoch"], back, same, int(fresh.optimizer.iterations.numpy()) == steps))
            kept = {p.name.split(".")[0] for p in folder.glob("ckpt-*")}
            assert kept <= {f"ckpt-{epoch}", recorded["best_checkpoint"]}  # the latest and the best only

    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 255, (24, 32, 32, 3)).astype(np.float32), rng.integers(0, 2, 24)
    model.fit(x[:16], y[:16], validation_data=(x[16:], y[16:]) if validate else None, epochs=3, batch_size=8,
              callbacks=[state, Check()], verbose=0)
    assert seen == [(0, 1, True, True), (1, 2, True, True), (2, 3, True, True)]
    assert resume.durable_epochs(folder) == 3


def test_a_state_of_another_model_or_format_is_one_clear_error(tmp_path):
    folder = tmp_path / "backup"
    model = _model()
    state = resume.ResumeState(model, folder, "loss", None)
    rng = np.random.default_rng(1)
    model.fit(rng.uniform(0, 255, (8, 32, 32, 3)), rng.integers(0, 2, 8), epochs=1, callbacks=[state], verbose=0)
    with pytest.raises(ToolkitError, match="cannot restore the resume state") as info:
        resume.ResumeState(_model(classes=3), folder, "loss", None).restore()
    assert "\n" not in str(info.value) and "without --resume" in str(info.value)
    (folder / resume.STATE).write_text(json.dumps({"format": 1, "epoch": 0, "latest": "slot-0.bin"}))
    with pytest.raises(ToolkitError, match="older format"):
        resume.ResumeState(_model(), folder, "loss", None).restore()
    assert resume.ResumeState(_model(), tmp_path / "none", "loss", None).restore() == 0
