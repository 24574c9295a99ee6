"""Frozen configs: one field per CLI flag, with the reason for each default.

A config is everything needed to reproduce a run; it is written into the run folder as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from toolkit.errors import ToolkitError

AUGMENTATIONS = ("flip", "rotate", "zoom", "shear", "color", "pca")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")  # see toolkit.train.distribute
# Where and how a run is started rather than what it computes: they may differ when it is resumed.
DEPLOYMENT = ("resume", "workers", "worker_index", "connect_timeout")


@dataclass(frozen=True)
class TrainConfig:
    model: str  # a name from toolkit.models.list_models()
    data: str  # a data spec: folder, .h5 file, or synthetic:NAME
    out: str  # the run folder
    epochs: int = 20  # HappyModel reaches 98% on synthetic:happy well within this
    batch_size: int = 32  # the seed's choice; small data sets, small batches
    lr: float = 1e-3  # Adam's default
    optimizer: str = "adam"
    seed: int = 0  # one seed drives the split, the weights' init, shuffling and augmentation
    image_size: int | None = None  # None: the model's default input (64)
    val: float = 0.15  # fraction held out for early stopping and the best checkpoint
    test: float = 0.15  # fraction held out for the final, untouched evaluation
    augment: tuple = ()  # any of AUGMENTATIONS; applied to training batches only
    patience: int = 5  # early-stopping patience on val loss; 0 switches it off
    resume: bool = False  # continue an interrupted run from its last finished epoch
    strict: bool = False  # unreadable images are an error instead of a skipped warning
    deterministic: bool = True  # same seed and data -> same weights (TF op determinism)
    model_kwargs: dict = field(default_factory=dict)  # builder options, e.g. {"stem": "keras"}
    strategy: str = "auto"  # one device, mirrored (local GPUs) or multiworker; auto: mirrored if >1 GPU
    scale_batch: bool = False  # False: batch_size is the global batch, so results match one device
    workers: tuple = ()  # multiworker: host:port of every worker, the chief first (or TF_CONFIG)
    worker_index: int | None = None  # multiworker: this process's place in workers
    connect_timeout: float = 120.0  # multiworker: seconds to wait for every worker to come up

    def __post_init__(self):
        check_training(self)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["augment"] = list(self.augment)
        d["workers"] = list(self.workers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ToolkitError(f"unknown training setting {unknown[0]!r}")
        d = dict(d)
        d["augment"] = tuple(d.get("augment", ()))
        d["workers"] = tuple(d.get("workers", ()))
        return cls(**d)


def check_training(cfg) -> None:
    """The settings every training config shares (TrainConfig, FinetuneConfig): one-line errors."""
    check_positive("epochs", cfg.epochs)
    check_positive("batch_size", cfg.batch_size)
    if not cfg.lr > 0:
        raise ToolkitError(f"lr must be > 0, got {cfg.lr}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ToolkitError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    bad = [a for a in cfg.augment if a not in AUGMENTATIONS]
    if bad:
        raise ToolkitError(f"unknown augmentation {bad[0]!r}; choose from {', '.join(AUGMENTATIONS)}")
    if not (0 <= cfg.val < 1 and 0 <= cfg.test < 1 and cfg.val + cfg.test < 1):
        raise ToolkitError(f"val and test fractions must be in [0, 1) and sum below 1, got {cfg.val}, {cfg.test}")
    if cfg.patience < 0:
        raise ToolkitError(f"patience must be >= 0, got {cfg.patience}")
    if cfg.strategy not in STRATEGIES:
        raise ToolkitError(f"strategy must be one of {', '.join(STRATEGIES)}, got {cfg.strategy!r}")
    if not cfg.connect_timeout > 0:
        raise ToolkitError(f"connect_timeout must be > 0 seconds, got {cfg.connect_timeout}")


def same_run(saved: dict, given: dict) -> str | None:
    """None when ``given`` settings may resume the run ``saved`` describes, else the first difference."""
    for key in saved:
        if key not in DEPLOYMENT and saved.get(key) != given.get(key):
            return f"{key}={given.get(key)!r} (run: {saved.get(key)!r})"
    return None


def check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ToolkitError(f"{name} must be a positive integer, got {value!r}")
