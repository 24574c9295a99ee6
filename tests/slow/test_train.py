"""Training end to end on small inputs: run folder, resume, determinism, evaluate, predict, augmentation."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from toolkit.cli import main
from toolkit.config import TrainConfig
from toolkit.errors import ToolkitError
from toolkit.train import runs
from toolkit.train.fit import train

pytestmark = pytest.mark.slow
DATA = "synthetic:happy?n=96&seed=3"


def _config(out, **kw):
    base = dict(model="happy", data=DATA, out=str(out), epochs=2, batch_size=16, image_size=32, patience=0)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(_config(tmp_path_factory.mktemp("runs") / "happy"))


def test_run_folder_is_complete(run):
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "model.keras", "history.csv", "metrics.json", "curves.png", "confusion.png", "logs"} <= names
    assert "backup" not in names  # a finished run leaves no resume state behind
    config = json.loads((run.path / "config.json").read_text())
    assert config["labels"] == ["no_smile", "smile"]
    assert set(config["fingerprints"]) == {"train", "val", "test"}
    assert config["train"]["seed"] == 0 and config["versions"]["tensorflow"].startswith("2.21")
    history = runs.read_history(run.path)
    assert [int(r["epoch"]) for r in history] == [0, 1]
    assert all(r["epoch_time"] > 0 for r in history)
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["n"] == config["sizes"]["test"] and 0 <= metrics["accuracy"] <= 1
    assert len(metrics["thresholds"]) > 5


def test_same_seed_same_weights(run, tmp_path):
    again = train(_config(tmp_path / "again"))
    a, b = run.load_model().get_weights(), again.load_model().get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    other = train(_config(tmp_path / "other", seed=1))
    assert not np.array_equal(other.load_model().get_weights()[0], a[0])


def test_occupied_run_folder_is_refused(run):
    with pytest.raises(ToolkitError, match="already holds a run"):
        train(_config(run.path))


def _interrupt_at(epoch: int, batch: int):
    """A callback that stops training with KeyboardInterrupt (as Ctrl-C would) after ``batch`` of ``epoch``."""
    from toolkit._keras import keras

    class Interrupt(keras().callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            self.epoch = e

        def on_train_batch_end(self, b, logs=None):
            if (self.epoch, b) == (epoch, batch):
                raise KeyboardInterrupt

    return Interrupt()


def test_resume_continues_after_the_last_finished_epoch(run, tmp_path):
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):  # mid-way through the second (last) epoch
        train(_config(out), extra_callbacks=(_interrupt_at(1, 1),))
    assert (out / "backup").is_dir() and not (out / "model.keras").exists()
    assert [int(r["epoch"]) for r in runs.read_history(out)] == [0]
    with pytest.raises(ToolkitError, match="--resume must use the run's own settings"):
        train(TrainConfig(**{**_config(out).to_dict(), "augment": (), "resume": True, "lr": 0.5}))
    with pytest.raises(ToolkitError, match="nothing to resume"):
        train(_config(tmp_path / "none", resume=True))
    resumed = train(_config(out, resume=True))
    # Only the epoch in flight was trained again, and the result is the uninterrupted run's (the `run` fixture).
    assert (out / "history.csv").read_text().count("\n") == 3  # header, epoch 0, epoch 1: epoch 0 not repeated
    def losses(path):
        return [{k: v for k, v in row.items() if k != "epoch_time"} for row in runs.read_history(path)]

    assert losses(out) == losses(run.path)
    a, b = run.load_model().get_weights(), resumed.load_model().get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not (out / "backup").exists()


def test_resume_after_interrupt_keeps_finished_epochs(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):  # during epoch 3 of 4
        train(_config(out, epochs=4), extra_callbacks=(_interrupt_at(2, 0),))
    assert (out / "backup").is_dir()
    assert [int(r["epoch"]) for r in runs.read_history(out)] == [0, 1]
    train(_config(out, epochs=4, resume=True))
    assert [int(r["epoch"]) for r in runs.read_history(out)] == [0, 1, 2, 3]
    assert not (out / "backup").exists()


def test_model_file_holds_the_best_epoch_not_the_last(tmp_path):
    from toolkit.train.fit import batches, compile_model

    r = train(_config(tmp_path / "best", epochs=5, lr=0.02))  # a high rate: validation loss jumps about
    assert not (r.path / "best").exists() and not (r.path / "backup").exists()
    history = runs.read_history(r.path)
    model = r.load_model()
    compile_model(model, 2, "adam", 0.001)
    val = r.splits().val
    loss = model.evaluate(batches(val, 16), verbose=0)[0]
    assert loss == pytest.approx(min(row["val_loss"] for row in history), rel=1e-4, abs=1e-5)


def test_augmentations_run_and_keep_pixel_range():
    from toolkit._keras import tf
    from toolkit.config import AUGMENTATIONS
    from toolkit.train.augment import make_augmenter, pca_colour_basis

    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    aug = make_augmenter(AUGMENTATIONS, seed=0, pca_basis=pca_colour_basis(x))
    out = aug(tf().constant(x.astype("float32"))).numpy()
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, x)


def test_train_with_augmentation_writes_a_model(tmp_path):
    r = train(_config(tmp_path / "aug", epochs=1, augment=("flip", "shear", "pca")))
    assert r.model_file.is_file()


def test_camera_degradations_draw_per_epoch_and_batch():
    from toolkit._keras import tf
    from toolkit.degrade import DEGRADATIONS
    from toolkit.train.augment import make_augmenter

    t = tf()
    epoch = t.Variable(0, dtype=t.int64)
    x = t.constant(np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3)).astype("float32"))
    aug = make_augmenter(DEGRADATIONS, seed=0, epoch=epoch)
    first = aug(x, 0).numpy()
    assert first.shape == x.shape and first.dtype == np.float32 and not np.array_equal(first, x.numpy())
    assert np.array_equal(first, aug(x, 0).numpy())
    assert not np.array_equal(first, aug(x, 1).numpy())  # the next batch draws afresh
    epoch.assign(1)
    assert not np.array_equal(first, aug(x, 0).numpy())  # and so does the next epoch


def test_training_batches_go_through_the_camera():
    from toolkit.data import load_data
    from toolkit.degrade import DEGRADATIONS
    from toolkit.train.augment import make_augmenter
    from toolkit.train.fit import batches, epoch_counter

    split = load_data("synthetic:happy?n=24&seed=1", 32).all()
    epoch = epoch_counter()
    aug = make_augmenter(DEGRADATIONS, seed=0, epoch=epoch)
    clean = [x.numpy() for x, _ in batches(split, 8)]
    seen = [x.numpy() for x, _ in batches(split, 8, augment=aug, epoch=epoch, deterministic=True)]
    assert len(seen) == 3 and all(a.shape == b.shape for a, b in zip(clean, seen))
    assert not any(np.array_equal(a, b) for a, b in zip(clean, seen))
    again = [x.numpy() for x, _ in batches(split, 8, augment=aug, epoch=epoch, deterministic=True)]
    assert all(np.array_equal(a, b) for a, b in zip(seen, again))


def test_training_with_camera_degradations_is_reproducible(tmp_path):
    kinds = ("lowres", "blur", "jpeg", "colorcast")
    small = "synthetic:happy?n=40&seed=3"
    a = train(_config(tmp_path / "a", data=small, epochs=1, augment=kinds))
    b = train(_config(tmp_path / "b", data=small, epochs=1, augment=kinds))
    assert all(np.array_equal(x, y) for x, y in zip(a.load_model().get_weights(), b.load_model().get_weights()))
    assert json.loads((a.path / "config.json").read_text())["train"]["augment"] == list(kinds)


def test_evaluate_and_predict_cli(run, tmp_path, capsys):
    assert main(["evaluate", str(run.path), "--tta"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "TTA" in out and "FAR" in out
    img = tmp_path / "big.png"
    Image.fromarray(np.full((300, 200, 4), 200, np.uint8)).save(img)  # RGBA, not the model's size
    assert main(["predict", str(run.path), str(img)]) == 0
    line = capsys.readouterr().out.strip().split("\t")
    assert line[0] == str(img) and line[1] in ("no_smile", "smile") and 0.5 <= float(line[2]) <= 1


@pytest.mark.parametrize("argv, message", [
    (["train", "happy", "--data", "synthetic:happy", "--out", "{tmp}/x", "--epochs", "0"],
     "--epochs: must be a positive integer"),
    (["train", "vgg", "--data", "synthetic:happy", "--out", "{tmp}/x"], "unknown model 'vgg'"),
    (["train", "happy", "--data", "synthetic:happy", "--out", "{tmp}/x", "--augment", "sharpen"],
     "--augment: unknown value 'sharpen'"),
    (["evaluate", "{tmp}/nothing"], "not found"),
    (["predict", "{tmp}/nothing.keras", "{tmp}/a.jpg"], "model file not found"),
    (["evaluate", "{tmp}/corrupt.keras", "--data", "synthetic:happy"], "not a loadable Keras model"),
])
def test_cli_errors_are_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 truncated")
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_history_reader_drops_repeated_epochs(tmp_path):
    with open(tmp_path / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["epoch", "loss"], [0, 1.0], [1, 0.9], ["epoch", "loss"], [1, 0.8], [2, 0.7]])
    assert [(r["epoch"], r["loss"]) for r in runs.read_history(tmp_path)] == [(0, 1.0), (1, 0.8), (2, 0.7)]


def test_train_benchmark_times_both_sides(capsys):
    from benchmarks.train_overhead import main as train_overhead

    assert train_overhead(["happy", "--data", "synthetic:happy?n=64", "--epochs", "2", "--image-size", "32",
                           "--batch-size", "16", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    rows = [r for r in (line.split() for line in out.splitlines()) if len(r) == 4 and r[0].isdigit()]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    assert "fastest" in out and "median" in out
