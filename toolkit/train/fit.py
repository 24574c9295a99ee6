"""``toolkit train``: fit a registered model from scratch with tf.data and Keras callbacks."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from toolkit.config import TrainConfig, same_run
from toolkit.errors import ToolkitError
from toolkit.train import distribute as D
from toolkit.train import runs
from toolkit.train.resume import ResumableEarlyStopping, ResumeState

log = logging.getLogger("toolkit.train")
BACKUP = "backup"


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


def batches(split, batch_size: int, *, shuffle: bool = False, seed: int = 0, augment=None, epoch=None, dist=None,
            deterministic: bool = False):
    """A split as batched float32 (images 0-255, labels) with prefetch; augmentation only if given.

    ``epoch`` (an :func:`epoch_counter`) makes the shuffled order a function of the seed and the epoch.
    ``deterministic``: op determinism is on (:func:`seed_everything`); with an ``epoch`` the maps are then
    sequential, as TensorFlow would run them anyway (see :func:`toolkit.data.pipeline.map_parallelism`).
    ``batch_size`` is the global batch; under multiworker ``dist`` the dataset carries the auto-shard
    policy that splits it between the workers (see :func:`toolkit.train.distribute.shard_options`).
    """
    from toolkit.data.pipeline import make_tf_dataset, map_parallelism

    t = _tf()
    options = D.shard_options(dist, split.streamed) if dist is not None else None
    parallel = map_parallelism(epoch, deterministic)
    calls = t.data.AUTOTUNE if parallel else None
    ds = make_tf_dataset(split, shuffle=shuffle, seed=seed, epoch=epoch, shard_hint=options is not None,
                         parallel=parallel)
    ds = ds.batch(batch_size).map(lambda x, y: (t.cast(x, t.float32), y), num_parallel_calls=calls)
    if augment is not None:  # the batch's index in its epoch seeds the camera degradations
        ds = ds.enumerate().map(lambda i, xy: (augment(xy[0], i), xy[1]), num_parallel_calls=calls)
    ds = ds.prefetch(t.data.AUTOTUNE)
    return ds.with_options(options) if options is not None else ds


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


def train(config: TrainConfig, *, data=None, extra_callbacks: tuple = ()) -> runs.Run | None:
    """Train ``config.model`` on ``config.data`` and write a complete run folder.

    Under ``--strategy multiworker`` every worker calls this with the same settings; the chief writes the
    run folder, the others write nothing there (see :mod:`toolkit.train.distribute`) and return None.

    Args:
        config: every setting of the run; saved as ``config.json``.
        data: an already loaded :class:`toolkit.data.Dataset` (saves re-reading it); else loaded from
            ``config.data``.
        extra_callbacks: Keras callbacks run after the toolkit's own (e.g. a benchmark's timer).

    Returns:
        The finished run (its ``model.keras`` is the best checkpoint by validation loss); None on a worker
        that is not the chief.

    Raises:
        ToolkitError: bad data, an occupied run folder, a config that contradicts a resumed run, or a
            cluster that does not come up.
    """
    from toolkit.models import get_spec

    D.quiet_native_log(config.strategy, config.workers)
    spec = get_spec(config.model)
    is_chief = D.is_chief(config.strategy, config.workers, config.worker_index)
    out = check_run_dir(config) if is_chief else Path(config.out)
    if config.resume and is_chief:
        differs = same_run(runs.load_run_config(out).to_dict(), config.to_dict())
        if differs:
            raise ToolkitError(f"{out}: --resume must use the run's own settings; differing: {differs}")
    dist = D.setup(config.strategy, config.workers, config.worker_index, config.connect_timeout)
    with D.translate_errors(dist):
        return _train(config, dist, out, spec, data, extra_callbacks)


def _train(config: TrainConfig, dist, out: Path, spec, data, extra_callbacks: tuple) -> runs.Run | None:
    """:func:`train` once the cluster is up; every worker runs every collective step in the same order."""
    from toolkit.models import build_model

    resume = dist.chief_says(config.resume)  # the chief's --resume decides for every worker
    if resume and dist.chief_says(dist.is_chief and is_finished(out)):
        log.info("%s: the run already finished; nothing to resume", out)
        dist.finish()
        return runs.load_run(out) if dist.is_chief else None
    ds, splits = load_splits(config, config.image_size or spec.default_input, data)
    n_classes = len(ds.labels)

    seed_everything(config.seed, config.deterministic)
    plan = D.plan_batch(config.batch_size, config.lr, dist.replicas, config.scale_batch)
    with dist.scope():  # the strategy creates (and mirrors) the variables
        model = build_model(config.model, (*splits.train.image_size, 3), n_classes, **config.model_kwargs)
        compile_model(model, n_classes, config.optimizer, plan.lr)
    if dist.is_chief:
        work = out
        out.mkdir(parents=True, exist_ok=True)  # only now: a bad spec or a missing extra leaves nothing behind
    else:  # the run folder is the chief's; this worker's side of collective saves goes to its own folder
        work = D.prepare_worker_dir(D.worker_dir(out, dist), resume)

    if not resume and dist.is_chief:
        runs.write_json_atomic(out / runs.CONFIG, run_record(config.to_dict(), ds, splits, model,
                                                             distribute=plan.record(dist)))

    augment = None
    epoch = epoch_counter()
    if config.augment:
        from toolkit.train.augment import make_augmenter, pca_colour_basis

        basis = pca_colour_basis(splits.train.numpy()[0], seed=config.seed) if "pca" in config.augment else None
        augment = make_augmenter(tuple(config.augment), config.seed, basis, epoch)
    train_ds = batches(splits.train, plan.global_batch, shuffle=True, seed=config.seed, augment=augment, epoch=epoch,
                       dist=dist, deterministic=config.deterministic)
    val_ds = batches(splits.val, plan.global_batch, dist=dist) if len(splits.val) else None
    log.info("training %s (%s params) on %d images, validating on %d, %d classes",
             model.name, f"{model.count_params():,}", len(splits.train), len(splits.val), n_classes)
    plan.announce()
    fit_model(model, work, train_ds, val_ds, epochs=config.epochs, patience=config.patience,
              extra_callbacks=extra_callbacks, data_epoch=epoch, dist=dist)
    run = finish_run(work, model, splits.test, dist=dist)
    finish_worker(work, dist)
    return run


def finish_worker(work: Path, dist) -> None:
    """The end of a run on every worker: a non-chief drops its private folder; all wait for the chief."""
    if not dist.is_chief:
        shutil.rmtree(work, ignore_errors=True)
        log.info("worker %d: done; the chief (%s) holds the run folder", dist.index, dist.cluster.tasks[0][2])
    dist.finish()


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


def epoch_counter():
    """A variable that holds the epoch being trained; shuffled datasets read it to pick that epoch's order.

    The order of epoch ``e`` then depends on ``(seed, e)`` only, so a resumed run sees the same batches
    as an uninterrupted one (tf.data's own reshuffling restarts from the first order in a new process).
    """
    t = _tf()
    return t.Variable(0, dtype=t.int64, trainable=False, name="data_epoch")


def fit_model(model, out: Path, train_ds, val_ds, *, epochs: int, patience: int, initial_epoch: int = 0,
              checkpoint: Path | None = None, backup: Path | None = None, extra_callbacks: tuple = (),
              data_epoch=None, dist=None) -> None:
    """``model.fit`` with the run folder's callbacks: resume state, best weights, CSV, TensorBoard.

    After every epoch the resume state (weights, optimizer, the epoch number, early stopping's verdict, and
    which epoch was best) is written to ``backup`` (see :mod:`toolkit.train.resume`), so a run killed at any
    moment resumes from the last finished epoch. When training ends the best epoch's weights are saved once as
    a whole model at ``checkpoint``. The backup folder stays until :func:`finish_run` has written everything else.

    Args:
        model: a compiled model.
        out: the run folder; history.csv and logs/ go here.
        train_ds, val_ds: batched datasets; without validation data the training loss picks the best epoch.
        epochs: the epoch number to stop at (counting from 0 across stages, like Keras' ``epochs``).
        patience: early-stopping patience on the monitored loss; 0 switches it off.
        initial_epoch: the first epoch of this stage (a second fine-tuning stage continues the numbering).
        checkpoint: where the best model is saved (default: the run's model.keras).
        backup: the resume checkpoint's folder (default: out/backup); one per stage, since each stage recompiles.
        extra_callbacks: run after the toolkit's own, so they see the work of all of them.
        data_epoch: the :func:`epoch_counter` the training dataset's shuffle reads, if any.
        dist: the :class:`toolkit.train.distribute.Distribution` the model was built under (default: one
            device). Every worker calls this; decisions read from files follow the chief's.
    """
    k = _k()
    dist = dist or D.LOCAL
    monitor = "val_loss" if val_ds is not None else "loss"
    history = runs.read_history(out)
    # Only earlier stages: this stage's own best travels inside its checkpoint.
    earlier = min((row[monitor] for row in history if row["epoch"] < initial_epoch and monitor in row), default=None)
    earlier = dist.chief_says(float("inf") if earlier is None else earlier)
    state = ResumeState(model, Path(backup or out / BACKUP), monitor, earlier, data_epoch)
    with dist.scope():  # restoring may create the optimizer's slot variables: the strategy must own them
        start = max(initial_epoch, state.restore())
    D.check_same_start(dist, start)
    callbacks = [
        EpochTimer(),
        # Before the checkpoint: an epoch's row is on disk before the state that skips it on resume.
        k.callbacks.CSVLogger(str(out / runs.HISTORY), append=True),
        k.callbacks.TensorBoard(str(out / "logs"), profile_batch=0),
    ]
    if patience:
        rows = [row for row in history if initial_epoch <= row["epoch"] < start]
        callbacks.append(ResumableEarlyStopping(monitor, patience, rows))
    callbacks.append(state)  # after early stopping, so the checkpoint records its verdict
    callbacks.extend(extra_callbacks)
    if start < epochs and not state.stopped:
        if start > initial_epoch:
            log.info("resuming after epoch %d (from %s)", start, state.folder)
        verbose = (1 if sys.stdout.isatty() else 2) if log.isEnabledFor(logging.INFO) else 0  # 0: --quiet
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=start, callbacks=callbacks,
                  verbose=verbose)
    if state.improved:  # this stage improved on the best so far: that epoch becomes the model
        state.load_best()
        save_model_atomic(model, checkpoint or out / runs.MODEL)


def save_model_atomic(model, path: Path) -> None:
    """``model.save`` through a temporary name, so a kill mid-write never leaves a truncated model file."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    model.save(tmp)
    tmp.replace(path)


def finish_run(out: Path, model, test_split, *, evaluate: bool = True, dist=None) -> runs.Run | None:
    """Close a run folder: keep the last model if no epoch improved, plot, evaluate, then drop resume state.

    The resume checkpoint goes last, so a run killed while finishing resumes by finishing again, not by
    training again: a folder with model.keras and no backup/ is a finished run (see :func:`is_finished`).
    Under multiworker only the chief gets past the model save (which needs every worker); others get None.
    """
    dist = dist or D.LOCAL
    if dist.chief_says(not (out / runs.MODEL).is_file()):  # no epoch improved on a resumed run's best: keep the last
        save_model_atomic(model, out / runs.MODEL)
    if not dist.is_chief:
        return None

    run = runs.load_run(out)
    from toolkit.train.evaluate import evaluate_run
    from toolkit.train.plots import plot_history

    plot_history(runs.read_history(out), out / "curves.png")
    if evaluate and len(test_split):
        evaluate_run(run, split=test_split)
    discard(out / BACKUP)
    for leftover in out.glob(f".{BACKUP}.removing-*"):  # a removal that an earlier kill interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    return run


def is_finished(out: Path) -> bool:
    """True for a run folder that :func:`finish_run` completed (its resume state is gone, its model there)."""
    return (out / runs.MODEL).is_file() and not (out / BACKUP).exists()


def discard(folder: Path) -> None:
    """Delete a folder so that a kill midway leaves it whole or absent: renamed away first, then removed."""
    if folder.exists():
        trash = folder.with_name(f".{folder.name}.removing-{os.getpid()}")
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _k():
    from toolkit._keras import keras

    return keras()


def _tf():
    from toolkit._keras import tf

    return tf()

