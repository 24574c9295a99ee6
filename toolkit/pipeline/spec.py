"""Pipeline files: a declarative TOML list of steps and their settings, validated before any work.

A pipeline holds no logic: each section becomes the config of one library function (the same one
the matching CLI command calls), and each key is a field of that config, declared once (see
:mod:`toolkit.settings`). Every problem in the file is reported at once, one line each, naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import tomllib

from toolkit import settings as S
from toolkit.bench.config import BenchmarkConfig
from toolkit.config import FinetuneConfig, ModelOptions, TrainConfig
from toolkit.errors import ToolkitError
from toolkit.export.config import ExportConfig, FaceModelConfig
from toolkit.settings import setting

log = logging.getLogger("toolkit.pipeline")

MODES = ("scratch", "freeze", "cached", "face")


@dataclass(frozen=True)
class PipelineInfo:
    name: str | None = setting(None, "The pipeline's name (default: the file's name); names its runs and export.")
    description: str = setting("", "One line for the report.")


@dataclass(frozen=True)
class StepOptions:
    mode: str = setting("scratch", "scratch: from random weights; freeze: pretrained weights with frozen layers; "
                        "cached: a head on cached features of the pretrained base; face: the face-landmark door model "
                        "(face mesh + expression features, settings in [face]; `toolkit face-model`).", choices=MODES)
    enabled: bool = setting(True, "Run this step.")


def _keys(cls, *names: str) -> dict[str, tuple[type, str]]:
    return {n: (cls, n) for n in names}


# section -> TOML key -> (the config class that declares it, its field). Help, kind, default, choices
# and bounds all come from that declaration; nothing about a key is written twice.
SECTIONS: dict[str, dict[str, tuple[type, str]]] = {
    "pipeline": _keys(PipelineInfo, "name", "description"),
    "data": {"spec": (TrainConfig, "data"), **_keys(TrainConfig, "image_size", "seed", "val", "test", "strict")},
    "pretrain": _keys(TrainConfig, "model", "data", "epochs", "batch_size", "lr", "optimizer", "augment", "patience",
                      "strategy", "scale_batch"),  # train a source model first ("weights = 'pretrain'")
    "train": {**_keys(StepOptions, "mode"),
              **_keys(FinetuneConfig, "model", "epochs", "batch_size", "lr", "optimizer", "augment", "patience",
                      "weights", "freeze", "unfreeze_at", "fine_tune_epochs", "fine_tune_lr", "feature_layer",
                      "head", "cv_folds", "cv_max_images", "keep_orientation", "strategy", "scale_batch"),
              **_keys(ModelOptions, "stem")},
    "export": _keys(ExportConfig, "formats", "quantize", "calibration", "calibration_method", "calibration_degrade",
                    "max_drop", "mixed_precision", "explain", "target_far", "qat_epochs", "qat_lr", "uint8_io", "opset",
                    "detector", "out"),
    "benchmark": {**_keys(StepOptions, "enabled"),
                  **_keys(BenchmarkConfig, "threads", "batch_size", "repeats", "keras", "degrade")},
    "report": _keys(StepOptions, "enabled"),
    # train.mode = "face": `toolkit face-model`'s settings (data.test and data.seed are its --test and --seed)
    "face": {**_keys(FaceModelConfig, "blocks", "target_far", "cv_max_images"),
             "copies": (FaceModelConfig, "augment"), "cv_folds": (FaceModelConfig, "folds"),
             "c_grid": (FaceModelConfig, "cs")},
}
REQUIRED = {"data": ("spec",), "pretrain": ("model", "data"), "train": ("model",)}
REQUIRED_SECTIONS = ("data", "train")
OPTIONAL_SECTIONS = ("pretrain",)  # absent: the step does not run (other sections get their defaults)
# train.mode = "face" builds the export in one step (toolkit face-model): of [train] only the mode applies, of
# [export] only the folder; the rest are another mode's settings.
FACE_TRAIN_KEYS = ("mode",)
FACE_EXPORT_KEYS = ("out",)
# Step settings that only apply to some training modes.
TRANSFER_ONLY = ("weights", "unfreeze_at", "feature_layer")


def _rule(section: str, key: str) -> dict:
    cls, name = SECTIONS[section][key]
    f = S.fields_of(cls)[name]
    m = S.meta(f)
    kind, _ = S.kind_of(cls, name)
    default = S.default_of(f)
    return {"kind": kind, "default": None if default is dataclasses.MISSING else default, "choices": m["choices"],
            "required": key in REQUIRED.get(section, ()), "low": m["low"], "above": m["above"], "high": m["high"],
            "below": m["below"], "help": m["help"], "aliases": m["toml_aliases"]}


# The derived schema, for tests and docs: section -> key -> rule.
SCHEMA: dict[str, dict[str, dict]] = {s: {k: _rule(s, k) for k in keys} for s, keys in SECTIONS.items()}


@dataclass(frozen=True)
class Pipeline:
    path: Path
    name: str
    settings: dict  # section -> key -> value, defaults filled in

    def section(self, name: str) -> dict:
        return self.settings.get(name, {})

    @property
    def has_pretrain(self) -> bool:
        return "pretrain" in self.settings


def _default(section: str, key: str, values: dict):
    """A key's default; a scratch [train] step takes TrainConfig's (e.g. 20 epochs, not fine-tuning's 10)."""
    cls, name = SECTIONS[section][key]
    if section == "train" and values.get("mode", "scratch") == "scratch":
        if key in TRANSFER_ONLY:
            return None
        if name in S.fields_of(TrainConfig):
            cls = TrainConfig
    value = S.default_of(S.fields_of(cls)[name])
    return None if value is dataclasses.MISSING else copy.deepcopy(value)


def _value(section: str, key: str, value, problems: list[str]):
    cls, name = SECTIONS[section][key]
    if key == "freeze" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # freeze = 40 and freeze = "all" are both natural in TOML
    if section == "benchmark" and key == "threads" and isinstance(value, list) and 0 in value:
        log.warning("benchmark.threads: 0 for every core is deprecated; write \"all\"")
        value = ["all" if v == 0 and not isinstance(v, bool) else v for v in value]
    try:
        value = S.normalize(cls, name, value)
    except S.SettingError as exc:
        problems.append(f"{section}.{key}: {exc.why}")
        return None
    return list(value) if isinstance(value, tuple) else value


def _section(section: str, body: dict, problems: list[str]) -> dict:
    keys = SECTIONS[section]
    aliases = {a: k for k in keys for a in SCHEMA[section][k]["aliases"]}
    given = {}
    for key, value in body.items():
        if key in aliases:
            log.warning("%s.%s is deprecated; use %s.%s", section, key, section, aliases[key])
            key = aliases[key]
        if key not in keys:
            problems.append(f"{section}.{key}: unknown key; known: {', '.join(keys)}")
            continue
        given[key] = _value(section, key, value, problems)
    face = section == "train" and given.get("mode") == "face"
    for key in REQUIRED.get(section, ()):
        if key not in given and not face:
            problems.append(f"{section}.{key}: required key is missing")
    return {k: given[k] if k in given else _default(section, k, given) for k in keys}


def validate(raw: dict, source: str) -> dict:
    """Check ``raw`` against :data:`SECTIONS`; returns settings with defaults filled in.

    Raises:
        ToolkitError: one line per problem, each naming ``source`` and the key.
    """
    problems: list[str] = []
    settings: dict = {}
    for section, body in raw.items():
        if section not in SECTIONS:
            problems.append(f"[{section}]: unknown section; known: {', '.join(SECTIONS)}")
        elif not isinstance(body, dict):
            problems.append(f"{section}: must be a table ([{section}]), got {type(body).__name__}")
    for section in REQUIRED_SECTIONS:
        if not isinstance(raw.get(section), dict):
            problems.append(f"[{section}]: required section is missing")
    for section in SECTIONS:
        body = raw.get(section)
        if isinstance(body, dict):
            settings[section] = _section(section, body, problems)
        elif section not in OPTIONAL_SECTIONS + REQUIRED_SECTIONS:
            settings[section] = _section(section, {}, problems)
    if not problems and settings["train"]["mode"] != "face":
        if isinstance(raw.get("face"), dict):
            problems.append("[face]: applies only to train.mode = 'face'; remove it or set the mode")
        settings.pop("face", None)  # another mode's pipeline has no [face], not one full of defaults
    if not problems:
        _check_values(settings, problems)
    if problems:
        raise ToolkitError("\n".join(f"{source}: {p}" for p in problems))
    return settings


def _check_values(s: dict, problems: list[str]) -> None:
    """Rules across keys: the configs' own checks (named by their keys), then the pipeline's."""
    def bad(key, why):
        problems.append(f"{key}: {why}")

    t = s["train"]
    if t["mode"] == "face":
        _check_face(s, bad)
        return
    pre = s.get("pretrain")
    if pre and "multiworker" in (pre["strategy"], t["strategy"]) and pre["strategy"] != t["strategy"]:
        bad("pretrain.strategy", f"is {pre['strategy']!r} but train.strategy is {t['strategy']!r}: under "
            "multiworker every worker runs every training step; give both 'multiworker'")
    if t["mode"] == "scratch":
        for key in TRANSFER_ONLY:
            if t[key] is not None:
                bad(f"train.{key}", "only applies to mode 'freeze' or 'cached'; remove it or change train.mode")
    elif t["weights"] == "pretrain" and "pretrain" not in s:  # no weights: the base's own (face, resnet50)
        bad("train.weights", "'pretrain' needs a [pretrain] section that says what to pretrain on")
    if t["mode"] == "cached" and (t["freeze"] != "all" or t["unfreeze_at"] is not None or t["augment"]):
        bad("train.mode", "'cached' trains the head on fixed features: use freeze = 'all', no unfreeze_at, no augment")
    if problems:
        return
    # Build the configs the run will build: their own checks, reported in this file's terms.
    for section, build in (("train", _probe_train), ("pretrain", _probe_pretrain), ("export", _probe_export),
                           ("benchmark", _probe_benchmark)):
        if section not in s:
            continue
        try:
            build(s)
        except S.SettingError as exc:
            key = next((k for k, (_, f) in SECTIONS[section].items() if f == exc.name), exc.name)
            where = "data" if key in SECTIONS["data"] and key not in SECTIONS[section] else section
            bad(f"{where}.{key}", exc.why)


def _check_face(s: dict, bad) -> None:
    """train.mode = "face": one step builds and validates the export; another mode's settings are mistakes."""
    def same(a, b):
        return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)

    if not s["data"]["test"] > 0:
        bad("data.test", "train.mode 'face' holds photos out for its figures and end-to-end validation: give e.g. 0.15")
    if "pretrain" in s:
        bad("[pretrain]", "does not apply to train.mode 'face' (its bases are pretrained: face mesh, fer); remove it")
    for key, value in s["train"].items():
        if key not in FACE_TRAIN_KEYS and not same(value, _default("train", key, {"mode": "face"})):
            bad(f"train.{key}", "does not apply to train.mode 'face'; its settings are in [face]")
    for key, value in s["export"].items():
        if key not in FACE_EXPORT_KEYS and not same(value, _default("export", key, {})):
            bad(f"export.{key}", "does not apply to train.mode 'face' (its export is the float ONNX chain, "
                "validated end to end); of [export] only 'out' applies")


def face_config(s: dict, *, out: str) -> FaceModelConfig:
    """The FaceModelConfig a ``train.mode = "face"`` pipeline describes (``toolkit face-model`` builds the same)."""
    f, d = s["face"], s["data"]
    fields = {name: f[key] for key, (_, name) in SECTIONS["face"].items()}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return FaceModelConfig(data=d["spec"], out=out, test=d["test"], seed=d["seed"], overwrite=True, **fields)


def train_config(s: dict, section: str, *, out: str, weights: str | None = None, resume: bool = False):
    """The TrainConfig or FinetuneConfig a step's settings describe (the CLI builds the same objects)."""
    d, t = s["data"], s[section]
    fields = {f: t[k] for k, (cls, f) in SECTIONS[section].items() if cls in (TrainConfig, FinetuneConfig)}
    fields.update(data=t.get("data") or d["spec"], out=out, resume=resume, seed=d["seed"], val=d["val"],
                  test=d["test"], image_size=d["image_size"], strict=d["strict"])
    kwargs = ModelOptions(stem=t.get("stem")).as_kwargs()
    if section == "pretrain" or t["mode"] == "scratch":
        names = S.fields_of(TrainConfig)
        return TrainConfig(model_kwargs=kwargs, **{k: v for k, v in fields.items() if k in names})
    return FinetuneConfig(model_kwargs=kwargs, cache_features=t["mode"] == "cached",
                          **{**fields, "weights": weights or t["weights"]})


def _probe_train(s):
    train_config(s, "train", out="-", weights="-")
    if s["train"]["mode"] == "scratch":  # the transfer keys are checked even where they do not apply
        train_config({**s, "train": {**s["train"], "mode": "freeze"}}, "train", out="-", weights="-")


def _probe_pretrain(s):
    train_config(s, "pretrain", out="-")


def _probe_export(s):
    ExportConfig(source="-", **{**{f: s["export"][k] for k, (_, f) in SECTIONS["export"].items()}, "out": "-"})


def _probe_benchmark(s):
    b = s["benchmark"]
    BenchmarkConfig(folder="-", **{f: b[k] for k, (cls, f) in SECTIONS["benchmark"].items() if cls is BenchmarkConfig})


def apply_overrides(raw: dict, data: str | None, sets: list[str]) -> dict:
    """``--data SPEC`` and ``--set section.key=value`` (value parsed as TOML, else taken as a string)."""
    raw = copy.deepcopy(raw)
    if data:
        raw.setdefault("data", {})["spec"] = data
    for item in sets:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ToolkitError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=5")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ToolkitError(f"--set {item!r}: [{section}] is not a table")
        target[name] = value
    return raw


def load_pipeline(path: str | Path, *, data: str | None = None, sets: list[str] | tuple = ()) -> Pipeline:
    """Read, override and validate a pipeline file.

    Raises:
        ToolkitError: missing or unparsable file, or any invalid setting (all listed, one per line).
    """
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: pipeline file not found (see pipelines/ for examples)")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"{path}: not valid TOML ({exc})") from exc
    settings = validate(apply_overrides(raw, data, list(sets)), str(path))
    name = settings["pipeline"]["name"] or path.stem
    if settings["export"]["out"] is None:
        settings["export"]["out"] = f"exported/{name}"
    return Pipeline(path, name, settings)
