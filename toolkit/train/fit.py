"""``toolkit train``: fit a registered model from scratch with tf.data and Keras callbacks."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

from toolkit.config import TrainConfig
from toolkit.errors import ToolkitError
from toolkit.train import runs

log = logging.getLogger("toolkit.train")
BACKUP = "backup"
BEST = "best"


def compile_model(model, n_classes: int, optimizer: str, lr: float) -> None:
    """Compile with the loss that matches the head: sigmoid for 2 classes, softmax otherwise."""
    k = _k()
    opt = {"adam": k.optimizers.Adam, "sgd": lambda learning_rate: k.optimizers.SGD(learning_rate, momentum=0.9),
           "rmsprop": k.optimizers.RMSprop}[optimizer](learning_rate=lr)
    if n_classes == 2:
        model.compile(opt, k.losses.BinaryCrossentropy(), metrics=[k.metrics.BinaryAccuracy(name="accuracy")])
    else:
        model.compile(opt, k.losses.SparseCategoricalCrossentropy(),
                      metrics=[k.metrics.SparseCategoricalAccuracy(name="accuracy")])


def batches(split, batch_size: int, *, shuffle: bool = False, seed: int = 0, augment=None):
    """A split as batched float32 (images 0-255, labels) with prefetch; augmentation only if given."""
    t = _tf()
    ds = split.tf_dataset(shuffle=shuffle, seed=seed).batch(batch_size)
    ds = ds.map(lambda x, y: (t.cast(x, t.float32), y), num_parallel_calls=t.data.AUTOTUNE)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x), y), num_parallel_calls=t.data.AUTOTUNE)
    return ds.prefetch(t.data.AUTOTUNE)


class EpochTimer:
    """Adds ``epoch_time`` (seconds) to each epoch's logs, so history.csv records it."""

    def __new__(cls):
        k = _k()

        class _Timer(k.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                if logs is not None:
                    logs["epoch_time"] = time.perf_counter() - self._t0

        return _Timer()


def check_run_dir(config: TrainConfig) -> Path:
    """Check the run folder before any work: new (or empty), or an unfinished run when resuming."""
    out = Path(config.out)
    has_run = (out / runs.CONFIG).is_file()
    if config.resume:
        if not has_run:
            raise ToolkitError(f"{out}: nothing to resume (no {runs.CONFIG}); drop --resume to start a new run")
    elif has_run or (out.exists() and any(out.iterdir())):
        raise ToolkitError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    return out


def train(config: TrainConfig, *, data=None, extra_callbacks: tuple = ()) -> runs.Run:
    """Train ``config.model`` on ``config.data`` and write a complete run folder.

    Args:
        config: every setting of the run; saved as ``config.json``.
        data: an already loaded :class:`toolkit.data.Dataset` (saves re-reading it); else loaded from
            ``config.data``.
        extra_callbacks: Keras callbacks run after the toolkit's own (e.g. a benchmark's timer).

    Returns:
        The finished run (its ``model.keras`` is the best checkpoint by validation loss).

    Raises:
        ToolkitError: bad data, an occupied run folder, or a config that contradicts a resumed run.
    """
    from toolkit.models import build_model, get_spec

    spec = get_spec(config.model)
    out = check_run_dir(config)
    if config.resume:
        saved = runs.load_run_config(out)
        if saved.to_dict() != {**config.to_dict(), "resume": saved.resume}:
            raise ToolkitError(f"{out}: --resume must use the run's own settings; differing: "
                               f"{_first_difference(saved.to_dict(), config.to_dict())}")
    ds, splits = load_splits(config, config.image_size or spec.default_input, data)
    n_classes = len(ds.labels)

    seed_everything(config.seed, config.deterministic)
    model = build_model(config.model, (*splits.train.image_size, 3), n_classes, **config.model_kwargs)
    compile_model(model, n_classes, config.optimizer, config.lr)
    out.mkdir(parents=True, exist_ok=True)  # only now: a bad spec or a missing extra leaves nothing behind

    if not config.resume:
        runs.write_json_atomic(out / runs.CONFIG, run_record(config.to_dict(), ds, splits, model))

    augment = None
    if config.augment:
        from toolkit.train.augment import make_augmenter, pca_colour_basis

        basis = pca_colour_basis(splits.train.numpy()[0], seed=config.seed) if "pca" in config.augment else None
        augment = make_augmenter(tuple(config.augment), config.seed, basis)
    train_ds = batches(splits.train, config.batch_size, shuffle=True, seed=config.seed, augment=augment)
    val_ds = batches(splits.val, config.batch_size) if len(splits.val) else None
    log.info("training %s (%s params) on %d images, validating on %d, %d classes",
             model.name, f"{model.count_params():,}", len(splits.train), len(splits.val), n_classes)
    fit_model(model, out, train_ds, val_ds, epochs=config.epochs, patience=config.patience,
              extra_callbacks=extra_callbacks)
    return finish_run(out, model, splits.test)


def load_splits(config, size: int, data=None):
    """Load ``config.data`` (unless given) and split it as ``config`` says -> (Dataset, Splits).

    ``config`` is a TrainConfig or anything with the same data fields (a FinetuneConfig).

    Raises:
        ToolkitError: bad data, or no training images.
    """
    from toolkit.data import load_data

    ds = data if data is not None else load_data(config.data, size, strict=config.strict)
    splits = ds.split(seed=config.seed, val=config.val, test=config.test)
    if len(splits.train) == 0:
        raise ToolkitError(f"{config.data}: no training images (a test-only set cannot be trained on)")
    if len(splits.train) < config.batch_size:
        log.warning("batch size %d is larger than the %d training images; each epoch is one batch",
                    config.batch_size, len(splits.train))
    return ds, splits


def seed_everything(seed: int, deterministic: bool) -> None:
    """One seed for weights, shuffling and augmentation; op determinism makes reruns bit-identical."""
    _k().utils.set_random_seed(seed)
    if deterministic:
        _tf().config.experimental.enable_op_determinism()


def run_record(train_settings: dict, ds, splits, model, **extra) -> dict:
    """The content of config.json: what :func:`runs.load_run` and ``Run.splits`` read back."""
    return {
        "train": train_settings,
        "labels": list(ds.labels),
        "image_size": list(splits.train.image_size),
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "fingerprints": splits.fingerprints(),
        "params": int(model.count_params()),
        "versions": runs.versions(),
        **extra,
    }


def fit_model(model, out: Path, train_ds, val_ds, *, epochs: int, patience: int, initial_epoch: int = 0,
              checkpoint: Path | None = None, backup: Path | None = None, extra_callbacks: tuple = ()) -> None:
    """``model.fit`` with the run folder's callbacks: backup for resume, best checkpoint, CSV, TensorBoard.

    Checkpoint writes run in the background while the next epoch trains: the resume state after every
    epoch, and the weights of each new best epoch (in ``best/``). When training ends the best weights
    are loaded back and saved once as a whole model at ``checkpoint``.

    Args:
        model: a compiled model.
        out: the run folder; history.csv and logs/ go here.
        train_ds, val_ds: batched datasets; without validation data the training loss picks the best epoch.
        epochs: the epoch number to stop at (counting from 0 across stages, like Keras' ``epochs``).
        patience: early-stopping patience on the monitored loss; 0 switches it off.
        initial_epoch: the first epoch of this stage (a second fine-tuning stage continues the numbering).
        checkpoint: where the best model is saved (default: the run's model.keras).
        backup: BackupAndRestore's folder (default: out/backup); one per stage, since each stage recompiles.
        extra_callbacks: run after the toolkit's own, so they see the work of all of them.
    """
    k = _k()
    monitor = "val_loss" if val_ds is not None else "loss"
    history = runs.read_history(out)
    best = min((row[monitor] for row in history if monitor in row), default=None)
    best_weights = BestWeights(model, out / BEST, monitor, best)
    callbacks = [
        EpochTimer(),
        # Saves weights, optimizer and epoch after every epoch; a killed run resumes after the last one.
        AsyncBackupAndRestore(str(backup or out / BACKUP)),
        best_weights,
        k.callbacks.CSVLogger(str(out / runs.HISTORY), append=True),
        k.callbacks.TensorBoard(str(out / "logs"), profile_batch=0),
    ]
    if patience:
        callbacks.append(k.callbacks.EarlyStopping(monitor=monitor, patience=patience))
    callbacks.extend(extra_callbacks)
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
              verbose=1 if sys.stdout.isatty() else 2)
    if best_weights.restore():  # this stage improved on the best so far: that epoch becomes the model
        save_model_atomic(model, checkpoint or out / runs.MODEL)
        shutil.rmtree(out / BEST)


def save_model_atomic(model, path: Path) -> None:
    """``model.save`` through a temporary name, so a kill mid-write never leaves a truncated model file."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    model.save(tmp)
    tmp.replace(path)


def _async_options():
    """Checkpoint options that copy the variables and write the copy on a background thread."""
    return _tf().train.CheckpointOptions(experimental_enable_async_checkpoint=True)


def AsyncBackupAndRestore(backup_dir: str):  # noqa: N802 (a class factory: tf_keras is imported lazily)
    """Keras' BackupAndRestore, writing each epoch's state in the background while the next epoch runs.

    TensorFlow's checkpoint manager records a checkpoint as the latest only after its write completes,
    so a run killed mid-write resumes from the previous epoch's state. Training waits for any write in
    flight before it ends.
    """

    class _AsyncBackupAndRestore(_k().callbacks.BackupAndRestore):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            manager = self._training_state.write_checkpoint_manager
            save = manager.save
            manager.save = lambda *args, **kwargs: save(*args, **{"options": _async_options(), **kwargs})

        def on_train_end(self, logs=None):
            self._training_state.write_checkpoint_manager.sync()
            super().on_train_end(logs)

    return _AsyncBackupAndRestore(backup_dir)


def BestWeights(model, folder: Path, monitor: str, best: float | None):  # noqa: N802 (lazy tf_keras class)
    """Keeps the weights of the epoch with the lowest ``monitor`` in ``folder``, written in the background.

    ``best`` is the lowest value of earlier stages or of the killed run being resumed: only a better
    epoch replaces their weights. ``restore()`` (after training) loads the best weights this stage
    wrote, if it wrote any, and says whether it did.
    """
    t = _tf()

    class _BestWeights(_k().callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = float("inf") if best is None else best
            # Weights only, not the optimizer: the model file made from them is for inference and export.
            self._ckpt = t.train.Checkpoint(weights=list(model.weights))
            self._manager = t.train.CheckpointManager(self._ckpt, str(folder), max_to_keep=1)

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is not None and value < self.best:  # NaN never compares lower
                self.best = value
                self._manager.save(checkpoint_number=epoch, options=_async_options())

        def on_train_end(self, logs=None):
            self._manager.sync()

        def restore(self) -> bool:
            latest = self._manager.latest_checkpoint if folder.is_dir() else None
            if latest is None:
                return False
            self._ckpt.restore(latest).assert_existing_objects_matched()
            return True

    return _BestWeights()


def finish_run(out: Path, model, test_split, *, evaluate: bool = True) -> runs.Run:
    """Close a run folder: keep the last model if no epoch improved, drop resume state, plot, evaluate."""
    if not (out / runs.MODEL).is_file():  # no epoch improved on a resumed run's best: keep the last
        save_model_atomic(model, out / runs.MODEL)
    shutil.rmtree(out / BACKUP, ignore_errors=True)

    run = runs.load_run(out)
    from toolkit.train.evaluate import evaluate_run
    from toolkit.train.plots import plot_history

    plot_history(runs.read_history(out), out / "curves.png")
    if evaluate and len(test_split):
        evaluate_run(run, split=test_split)
    return run


def _first_difference(a: dict, b: dict) -> str:
    for key in a:
        if key != "resume" and a.get(key) != b.get(key):
            return f"{key}={b.get(key)!r} (run: {a.get(key)!r})"
    return "none"


def _k():
    from toolkit._keras import keras

    return keras()


def _tf():
    from toolkit._keras import tf

    return tf()

