"""``toolkit finetune``: start from pretrained weights, replace the head, train with frozen layers.

Three recipes share one run folder (the same files as ``toolkit train``, so evaluate/export just work):

- ``--freeze N|all|none``: the first N layers of ``model.layers`` keep their pretrained weights;
- ``--unfreeze-at K --fine-tune-epochs E``: train the head first, then layers K.. at a lower rate;
- ``--cache-features``: run the frozen base once, cache its penultimate outputs, train only the head;
  with a few hundred images (``--head auto``) or ``--head cv`` the head is chosen by cross-validation
  (:mod:`toolkit.train.cvhead`), else it is a Keras head early-stopped on the validation split.

``--feature-layer L`` moves the cut: the base ends at layer L (a feature map is flattened, keeping where
things are) and a new classifier follows. Features from the last layers are specific to the pretraining
task; when the new task differs, earlier layers transfer better.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from toolkit.config import FinetuneConfig, same_run
from toolkit.errors import ToolkitError
from toolkit.train import distribute as D
from toolkit.train import fit, runs
from toolkit.train.cvhead import choose_head, train_cv_head
from toolkit.train.surgery import (
    check_feature_layer,
    copy_weights,
    cut_model,
    freeze_layers,
    frozen_count,
    unfreeze_from,
)

log = logging.getLogger("toolkit.finetune")
IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"  # no head: it is replaced anyway
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_FILE
IMAGENET_MD5 = "4d473c1dd8becc155b73f8504c6f6626"  # Keras Applications' own hash for this file
STAGE1_DONE = "stage1.json"


def imagenet_weights_file() -> Path:
    """The official ResNet50 ImageNet file through Keras' download cache (~/.keras/models).

    Raises:
        ToolkitError: offline and not cached; says which file to download and where to put it.
    """
    from toolkit._keras import keras

    target = Path.home() / ".keras" / "models" / IMAGENET_FILE
    try:
        return Path(keras().utils.get_file(IMAGENET_FILE, IMAGENET_URL, file_hash=IMAGENET_MD5, cache_subdir="models"))
    except Exception as exc:  # URLError, HTTPError, a hash mismatch: all mean "get the file yourself"
        raise ToolkitError(f"cannot download the ImageNet weights ({type(exc).__name__}); download {IMAGENET_URL} "
                           f"to {target}, or pass --weights PATH (a .h5/.keras file or a run folder)") from exc


def resolve_weights(config: FinetuneConfig, spec=None):
    """--weights -> (source, origin text, model kwargs it implies).

    The source is a Path (a file in Keras Applications' ResNet50 layout), a dict {layer name: arrays}
    (a weights-only .h5 of a toolkit model), a Keras model, or None when the builder loads the weights
    itself (a base from a model file, keras:NAME, face). ImageNet weights imply ImageNet preprocessing
    and Keras' stem (their outputs then match Keras exactly); a run folder implies the run's own builder
    options; a model file, what its layers show. No --weights means the base's own pretrained weights.
    """
    from toolkit.models import get_spec
    from toolkit.models.weights import read_keras_h5

    spec = spec or get_spec(config.model)
    weights = config.weights if config.weights is not None else spec.weights
    if spec.own_weights and (config.weights is None or weights in ("imagenet", "none", "random", spec.weights)
                             or weights.endswith(".whl")):
        kind = "none" if weights in ("none", "random") else None if config.weights is None else weights
        shown = "random weights" if kind == "none" else weights or "its own weights"
        return None, f"{config.model} ({shown})", {"weights": kind}
    if weights is None:
        raise ToolkitError(f"{config.model} has no pretrained weights of its own; pass --weights PATH "
                           "(a .h5/.keras file or a run folder)")
    path = Path(weights).expanduser()
    if weights == "imagenet":
        if spec.weights != "imagenet":
            raise ToolkitError(f"--weights imagenet is for resnet50 and keras:NAME only, not {config.model!r}; "
                               "pass --weights PATH")
        path = imagenet_weights_file()
        return path, str(path), {"preprocess": "imagenet", "stem": "keras"}
    implied = {"weights": "none"} if spec.own_weights else {}  # the builder needs not fetch what is replaced
    if not path.exists():
        raise ToolkitError(f"--weights {weights}: not found; give imagenet, a .h5/.keras file or a run folder")
    if path.is_dir():
        run = runs.load_run(path)
        if run.model_name != config.model:
            raise ToolkitError(f"--weights {path}: a {run.model_name} run; its weights do not fit {config.model}")
        return run.load_model(), str(path), {**dict(run.config["train"].get("model_kwargs", {})), **implied}
    if path.suffix == ".h5" and not _is_full_model_h5(path):
        arrays = read_keras_h5(path)
        if "conv1_conv" in arrays:  # Keras Applications' layout: ImageNet-style weights
            return path, str(path), {"preprocess": "imagenet", "stem": "keras"}
        return arrays, str(path), implied
    source = runs.load_keras_model(path)
    return source, str(path), implied if spec.own_weights else _implied_kwargs(source)


def _is_full_model_h5(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs
    except OSError as exc:
        raise ToolkitError(f"--weights {path}: not an HDF5 file ({exc})") from exc


def _implied_kwargs(source) -> dict:
    """Builder options a saved toolkit model shows in its layers (its preprocessing and ResNet stem)."""
    names = {layer.name: type(layer).__name__ for layer in source.layers}
    kinds = {"Rescaling": "scale", "Normalization": "imagenet", "Identity": "none"}
    out = {"preprocess": kinds[names["preprocess"]]} if names.get("preprocess") in kinds else {}
    if "conv1" in names:  # a ResNet: its stem decides the feature-map sizes
        out["stem"] = "keras" if "pool1_pad" in names else "seed"
    return out


def finetune(config: FinetuneConfig, *, data=None) -> runs.Run | None:
    """Transfer ``config.weights`` to ``config.data`` and write a run folder like ``toolkit train``'s.

    Args:
        config: every setting; saved in config.json (its "train" part is the TrainConfig view of it).
        data: an already loaded Dataset; else loaded from ``config.data``.

    Returns:
        The finished run; its model.keras is one flat model (base + new head), exportable like any run.
        None on a multiworker worker that is not the chief (the chief writes the run folder).

    Raises:
        ToolkitError: unusable weights (offline ImageNet, another architecture), bad --freeze/--unfreeze-at,
            bad data, an occupied run folder or a resume with other settings.
    """
    from toolkit.models import get_spec

    if config.model == "hands":  # a numpy/onnxruntime base, not a Keras one: landmarks, then the cv head
        from toolkit.train.hands import finetune_hands

        return finetune_hands(config, data)
    D.quiet_native_log(config.strategy, config.workers)
    spec = get_spec(config.model)
    is_chief = D.is_chief(config.strategy, config.workers, config.worker_index)
    out = fit.check_run_dir(config) if is_chief else Path(config.out)
    if config.resume and is_chief:
        differs = same_run(json.loads((out / runs.CONFIG).read_text()).get("finetune", {}), config.to_dict())
        if differs:
            raise ToolkitError(f"{out}: --resume must use the run's own settings; differing: {differs}")
    dist = D.setup(config.strategy, config.workers, config.worker_index, config.connect_timeout)
    with D.translate_errors(dist):
        return _finetune(config, dist, out, spec, data)


def _finetune(config: FinetuneConfig, dist, out: Path, spec, data) -> runs.Run | None:
    """:func:`finetune` once the cluster is up; every worker runs every collective step in the same order."""
    from toolkit.models import build_model
    from toolkit.models.summary import param_counts

    resume = dist.chief_says(config.resume)  # the chief's --resume decides for every worker
    if resume and dist.chief_says(dist.is_chief and fit.is_finished(out)):
        log.info("%s: the run already finished; nothing to resume", out)
        dist.finish()
        return runs.load_run(out) if dist.is_chief else None
    source, origin, implied = resolve_weights(config, spec)
    kwargs = {**implied, **config.model_kwargs}
    ds, splits = fit.load_splits(config, config.image_size or spec.default_input, data)
    n_classes = len(ds.labels)

    # the cv head cuts the base at each candidate layer itself (toolkit.train.cvhead)
    head_kind = choose_head(config.head, len(splits.train) + len(splits.val), config.cv_max_images,
                            len(config.feature_layers)) if config.cache_features else "keras"
    fit.seed_everything(config.seed, config.deterministic)
    plan = D.plan_batch(config.batch_size, config.lr, dist.replicas, config.scale_batch)
    # Cached features: the full model never trains (only a copy of its head), so it stays on this machine.
    with dist.scope() if not config.cache_features else D.LOCAL.scope():
        model = build_model(config.model, (*splits.train.image_size, 3), n_classes, **kwargs)
        penultimate = spec.penultimate
        feature_layer = config.feature_layer or spec.feature_layer  # the base's own default cut (face: bn_12)
        if feature_layer not in (None, spec.penultimate) and head_kind != "cv":
            model, penultimate = cut_model(model, feature_layer, spec.penultimate, n_classes)
    n_base = [la.name for la in model.layers].index(penultimate) + 1
    head = {la.name for la in model.layers[n_base:]}
    n_frozen = frozen_count(config.freeze, len(model.layers), n_base)
    if config.unfreeze_at is not None and config.unfreeze_at > n_base:
        raise ToolkitError(f"--unfreeze-at {config.unfreeze_at}: the model has {n_base} layers before the head")
    loaded = copy_weights(model, source, head, origin)
    candidates = config.feature_layers or ((spec.feature_layer,) if spec.feature_layer else ())
    for layer in candidates if head_kind == "cv" else ():  # before the run folder exists
        check_feature_layer(model, layer, penultimate)
    if dist.is_chief:
        work = out
        out.mkdir(parents=True, exist_ok=True)  # only now: bad weights, data or flags leave nothing behind
    else:  # the run folder is the chief's; this worker's side of collective saves goes to its own folder
        work = D.prepare_worker_dir(D.worker_dir(out, dist), resume)
    freeze_layers(model, n_frozen)
    counts = param_counts(model)
    log.info("loaded pretrained weights into %d layers from %s; new head %s for %d classes",
             loaded, origin, sorted(head), n_classes)
    log.info("frozen: %d of %d layers; trainable params: %s, non-trainable params: %s",
             n_frozen, len(model.layers), f"{counts['trainable']:,}", f"{counts['non_trainable']:,}")
    record = fit.run_record(config.train_settings(kwargs), ds, splits, model, finetune=config.to_dict(),
                            weights={"source": origin, "layers_loaded": loaded}, frozen_layers=n_frozen,
                            param_counts=counts, distribute=plan.record(dist), head={"head": head_kind})
    if not resume and dist.is_chief:
        runs.write_json_atomic(out / runs.CONFIG, record)

    plan.announce()
    if head_kind == "cv":
        run = train_cv_head(config, model, penultimate, splits, ds.labels, work, dist, candidates=candidates)
    elif config.cache_features:
        run = _train_on_features(config, model, penultimate, splits, ds.labels, work, dist, plan)
    else:
        run = _train_images(config, model, splits, n_classes, work, dist, plan)
    fit.finish_worker(work, dist)
    return run


def _train_images(config: FinetuneConfig, model, splits, n_classes: int, out: Path, dist, plan) -> runs.Run | None:
    """Train the model on images with its frozen layers, in one or two stages."""
    with dist.scope():
        fit.compile_model(model, n_classes, config.optimizer, plan.lr)
    augment = None
    epoch = fit.epoch_counter()
    if config.augment:
        from toolkit.train.augment import make_augmenter, pca_colour_basis

        basis = pca_colour_basis(splits.train.numpy()[0], seed=config.seed) if "pca" in config.augment else None
        augment = make_augmenter(tuple(config.augment), config.seed, basis, epoch)
    train_ds = fit.batches(splits.train, plan.global_batch, shuffle=True, seed=config.seed, augment=augment,
                           epoch=epoch, dist=dist, deterministic=config.deterministic)
    val_ds = fit.batches(splits.val, plan.global_batch, dist=dist) if len(splits.val) else None
    _two_stages(config, model, out, train_ds, val_ds, n_classes, epoch, dist, plan)
    return fit.finish_run(out, model, splits.test, dist=dist)


def _two_stages(config: FinetuneConfig, model, out: Path, train_ds, val_ds, n_classes: int, epoch,
                dist=D.LOCAL, plan=None) -> None:
    """Stage 1 as frozen; stage 2 (if asked) from layer K at the fine-tuning rate, numbering epochs on."""
    done = out / fit.BACKUP / STAGE1_DONE
    weights = out / fit.BACKUP / "stage1.weights.h5"
    if dist.all_agree(done.is_file()):  # resuming inside stage 2: stage 1's result is kept, not retrained
        model.load_weights(weights)
        stage2_start = json.loads(done.read_text())["epochs"]
    else:
        fit.fit_model(model, out, train_ds, val_ds, epochs=config.epochs, patience=config.patience,
                      backup=out / fit.BACKUP / "stage1", data_epoch=epoch, dist=dist)
        stage2_start = dist.chief_says(len(runs.read_history(out)))
        if config.unfreeze_at is not None:
            model.save_weights(weights)
            runs.write_json_atomic(done, {"epochs": stage2_start})
    if config.unfreeze_at is None:
        return
    from toolkit.models.summary import param_counts

    unfreeze_from(model, config.unfreeze_at)
    counts = param_counts(model)
    lr = config.fine_tune_lr * (plan.lr / config.lr if plan else 1.0)  # scaled like stage 1's under --scale-batch
    log.info("stage 2: layers %d.. train at lr %g; trainable params: %s, non-trainable params: %s",
             config.unfreeze_at, lr, f"{counts['trainable']:,}", f"{counts['non_trainable']:,}")
    with dist.scope():
        fit.compile_model(model, n_classes, config.optimizer, lr)
    fit.fit_model(model, out, train_ds, val_ds, epochs=stage2_start + config.fine_tune_epochs,
                  patience=config.patience, initial_epoch=stage2_start, backup=out / fit.BACKUP / "stage2",
                  data_epoch=epoch, dist=dist)


def _train_on_features(config: FinetuneConfig, model, penultimate: str, splits, labels, out: Path, dist=D.LOCAL,
                       plan=None) -> runs.Run | None:
    """Cache the base's features, train a copy of the head on them, put it back on the base.

    ``model`` is local to this machine; only the head's copy trains under ``dist``. Under multiworker each
    worker computes its share of the features and the chief assembles the cache entry.
    """
    import time

    import numpy as np

    from toolkit.train import features as F
    from toolkit.train.plots import plot_confusion

    base = F.base_model(model, penultimate)
    t0 = time.perf_counter()
    weights_hash = F.base_hash(base)
    parts = {s.name: F.cache_features(base, s, weights_hash=weights_hash, layer=penultimate, dist=dist,
                                      scratch=out / "features")
             for s in (splits.train, splits.val, splits.test) if len(s)}
    cache_s = time.perf_counter() - t0
    computed = [name for name, f in parts.items() if not f.hit]
    if computed:
        log.info("feature caching took %.1f s (one time; computed: %s)", cache_s, ", ".join(computed))
    else:
        log.info("all features came from the cache: no base computation at all")
    plan = plan or D.plan_batch(config.batch_size, config.lr, 1, False)
    with dist.scope():
        head = F.build_head(model, penultimate)
        fit.compile_model(head, len(labels), config.optimizer, plan.lr)
    epoch = fit.epoch_counter()
    options = D.shard_options(dist, streamed=False)  # every worker reads all features and keeps its slice
    train_ds = F.feature_batches(parts["train"], plan.global_batch, shuffle=True, seed=config.seed, epoch=epoch)
    val_ds = F.feature_batches(parts["val"], plan.global_batch) if "val" in parts else None
    if options is not None:
        train_ds, val_ds = train_ds.with_options(options), val_ds and val_ds.with_options(options)
    head_file = out / "head.keras"
    fit.fit_model(head, out, train_ds, val_ds, epochs=config.epochs, patience=config.patience, checkpoint=head_file,
                  data_epoch=epoch, dist=dist)
    if head_file.is_file():
        head = runs.load_keras_model(head_file)  # the best epoch, as model.keras is for image training
    F.assemble(model, head)
    if not dist.is_chief:
        return fit.finish_run(out, model, splits.test, evaluate=False, dist=dist)  # its collective part only
    head = F.build_head(model, penultimate)  # a copy on this machine: evaluating needs no other worker
    fit.save_model_atomic(model, out / runs.MODEL)
    runs.write_json_atomic(out / "features.json", {
        "cache_seconds": cache_s, "computed": computed, "keys": {n: f.key for n, f in parts.items()},
        "dim": int(base.output_shape[-1]), "layer": penultimate})
    if "test" in parts:  # from the cached test features: the base does not run again
        report = F.evaluate_features(head, parts["test"], tuple(labels))
        report.update(data=config.data, split="test", fingerprint=splits.test.fingerprint)
        runs.write_json_atomic(out / runs.METRICS, report)
        plot_confusion(np.array(report["confusion"]), tuple(labels), out / "confusion.png")
    return fit.finish_run(out, model, splits.test, evaluate=False, dist=dist)  # last: it drops the resume state
