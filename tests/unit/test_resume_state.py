"""The resume state's staging buffer and slot files, and the training benchmark's statistics and turns."""

import json
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from benchmarks.train_overhead import _OtherSideFailed, _Turns, paired_ratio
from toolkit._keras import tf
from toolkit.train import resume


def _variables():
    rng = np.random.default_rng(0)
    t = tf()
    return [t.Variable(rng.normal(size=(3, 5, 7)).astype(np.float32)),
            t.Variable(rng.normal(size=(1001,)).astype(np.float32)),  # not a whole number of blocks
            t.Variable(np.int64(42)),  # an optimizer's step counter: a scalar
            t.Variable(rng.normal(size=(2, 2)).astype(np.float64))]


def _fresh_like(variables):
    return [tf().Variable(np.zeros(v.shape, v.dtype.as_numpy_dtype)) for v in variables]


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_slot_round_trip_holds_the_values_packed(where, tmp_path):
    """What is written is what the variables held when packed, not what they hold later (O_DIRECT or buffered)."""
    if where == "tmpfs":
        if not Path("/dev/shm").is_dir():
            pytest.skip("no /dev/shm here")
        tmp_path = Path(tempfile.mkdtemp(dir="/dev/shm"))  # tmpfs refuses O_DIRECT: the buffered path
    variables = _variables()
    packed = [v.numpy().copy() for v in variables]
    staging = resume._Staging(variables)
    staging.pack()
    for v in variables:  # training goes on after the pack
        v.assign(v + tf().ones_like(v))
    staging.write(tmp_path / "slot-0.bin")
    staging.close()
    size = (tmp_path / "slot-0.bin").stat().st_size
    assert size % resume.BLOCK == 0 and size >= sum(a.nbytes for a in packed)
    back = _fresh_like(variables)
    resume._read(tmp_path / "slot-0.bin", back, "restart")
    for a, v in zip(packed, back):
        np.testing.assert_array_equal(a, v.numpy())


def test_a_slot_of_a_bigger_model_is_refused(tmp_path):
    variables = _variables() + [tf().Variable(np.ones((5000,), np.float32))]
    staging = resume._Staging(variables)
    staging.pack()
    staging.write(tmp_path / "slot-0.bin")
    staging.close()
    with pytest.raises(resume.ToolkitError, match="holds more than this model"):
        resume._read(tmp_path / "slot-0.bin", _fresh_like(variables[:-1]), "restart")


def test_write_errors_name_the_slot_file(tmp_path):
    variables = _variables()
    staging = resume._Staging(variables)
    staging.pack()
    with pytest.raises(OSError) as info:
        staging.write(tmp_path / "no-such-folder" / "slot-1.bin")
    staging.close()
    assert info.value.filename == str(tmp_path / "no-such-folder" / "slot-1.bin")


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
    """With validation the copy is taken when validation begins, without it at the epoch's end: same bytes."""
    from toolkit._keras import keras
    from toolkit.models import build_model
    from toolkit.train.fit import compile_model

    k = keras()
    k.utils.set_random_seed(0)
    model = build_model("happy", (32, 32, 3), 2)
    compile_model(model, 2, "adam", 1e-3)
    folder = tmp_path / "backup"
    state = resume.ResumeState(model, folder, "val_loss" if validate else "loss", None)
    same = []

    class Check(k.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            state.sync()
            latest = json.loads((folder / resume.STATE).read_text())["latest"]
            variables = state._variables()
            back = _fresh_like(variables)
            resume._read(folder / latest, back, "restart")
            same.append(all(np.array_equal(v.numpy(), b.numpy()) for v, b in zip(variables, back)))

    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 255, (24, 32, 32, 3)).astype(np.float32), rng.integers(0, 2, 24)
    model.fit(x[:16], y[:16], validation_data=(x[16:], y[16:]) if validate else None, epochs=3, batch_size=8,
              callbacks=[state, Check()], verbose=0)
    assert same == [True, True, True]


def test_the_benchmark_times_the_writes_without_the_trainers_help(tmp_path):
    """benchmarks.train_overhead wraps the resume states fit.py makes (fit.py knows nothing of it) and undoes it."""
    from benchmarks.train_overhead import _watched_resume_states
    from toolkit._keras import keras
    from toolkit.models import build_model
    from toolkit.train import fit

    k = keras()
    k.utils.set_random_seed(0)
    model = build_model("happy", (32, 32, 3), 2)
    fit.compile_model(model, 2, "adam", 1e-3)
    found: list = []
    with _watched_resume_states(found):
        state = fit.ResumeState(model, tmp_path / "backup", "loss", None)
    assert fit.ResumeState is resume.ResumeState and found == [state]
    seen = []

    class Check(k.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            state.sync()
            seen.append(list(state.write_cpu))
            state.write_cpu.clear()

    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 255, (16, 32, 32, 3)).astype(np.float32), rng.integers(0, 2, 16)
    model.fit(x, y, epochs=2, batch_size=8, callbacks=[state, Check()], verbose=0)
    assert [len(s) for s in seen] == [1, 1] and all(s[0] > 0 for s in seen)  # one timed write per epoch
    assert resume.durable_epochs(tmp_path / "backup") == 2  # and the writes themselves still happen
