"""Pipeline files: a declarative TOML list of steps and their settings, validated before any work.

A pipeline holds no logic: each section becomes the config of one library function (the same one
the matching CLI command calls). Every problem in the file is reported at once, one line each,
naming the key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from toolkit.config import STRATEGIES
from toolkit.errors import ToolkitError

MODES = ("scratch", "freeze", "cached")
_INT, _FLOAT, _STR, _BOOL, _LIST = "integer", "number", "string", "boolean", "list"


def _k(kind, default=None, choices=None, required=False, low=None, above=None):
    """One key's rule: its kind, default, allowed values, and bounds (``low`` <= value, ``above`` < value)."""
    return {"kind": kind, "default": default, "choices": choices, "required": required, "low": low, "above": above}


# section -> key -> rule. Defaults match the CLI commands' defaults.
SCHEMA: dict[str, dict[str, dict]] = {
    "pipeline": {"name": _k(_STR), "description": _k(_STR, "")},
    "data": {
        "spec": _k(_STR, required=True), "image_size": _k(_INT, 64), "seed": _k(_INT, 0, low=0),
        "val": _k(_FLOAT, 0.15, low=0), "test": _k(_FLOAT, 0.15, low=0), "strict": _k(_BOOL, False),
    },
    "pretrain": {  # optional: train a source model first, then transfer from it ("weights = 'pretrain'")
        "model": _k(_STR, required=True), "data": _k(_STR, required=True), "epochs": _k(_INT, 10, low=1),
        "batch_size": _k(_INT, 32, low=1), "lr": _k(_FLOAT, 1e-3, above=0), "augment": _k(_LIST, []),
        "patience": _k(_INT, 5, low=0), "strategy": _k(_STR, "auto", STRATEGIES), "scale_batch": _k(_BOOL, False),
    },
    "train": {
        "mode": _k(_STR, "scratch", MODES), "model": _k(_STR, required=True), "epochs": _k(_INT, 20, low=1),
        "batch_size": _k(_INT, 32, low=1), "lr": _k(_FLOAT, 1e-3, above=0),
        "optimizer": _k(_STR, "adam", ("adam", "sgd", "rmsprop")), "augment": _k(_LIST, []),
        "patience": _k(_INT, 5, low=0), "stem": _k(_STR, None, ("seed", "keras")), "weights": _k(_STR, None),
        "freeze": _k(_STR, "all"), "unfreeze_at": _k(_INT, None, low=0), "fine_tune_epochs": _k(_INT, 0, low=0),
        "fine_tune_lr": _k(_FLOAT, 1e-5, above=0), "feature_layer": _k(_STR, None),
        # multiworker takes its cluster from TF_CONFIG; the chief alone then exports, benchmarks and reports
        "strategy": _k(_STR, "auto", STRATEGIES), "scale_batch": _k(_BOOL, False),
    },
    "export": {
        "formats": _k(_LIST, ["onnx", "tflite"]), "quantize": _k(_LIST, ["none", "int8"]),
        "calibration": _k(_INT, 300, low=1),
        "calibration_method": _k(_STR, "minmax", ("minmax", "entropy", "percentile")),
        "max_drop": _k(_FLOAT, 1.0, low=0), "target_far": _k(_FLOAT, 0.01, low=0), "qat_epochs": _k(_INT, 2, low=1),
        "uint8_io": _k(_BOOL, False), "out": _k(_STR, None),
    },
    "benchmark": {
        "enabled": _k(_BOOL, True), "threads": _k(_LIST, [1, 0]), "batch": _k(_LIST, [1, 32]),
        "repeats": _k(_INT, 50, low=1), "keras": _k(_BOOL, True),
    },
    "report": {"enabled": _k(_BOOL, True)},
}
REQUIRED_SECTIONS = ("data", "train")


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


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _type_ok(kind: str, value: Any) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {_STR: str, _BOOL: bool, _LIST: list}[kind])


def _check_values(s: dict, problems: list[str]) -> None:
    """Ranges and combinations no single key can see."""
    def bad(key, why):
        problems.append(f"{key}: {why}")

    t, d = s["train"], s["data"]
    pre = s.get("pretrain")
    if pre and "multiworker" in (pre["strategy"], t["strategy"]) and pre["strategy"] != t["strategy"]:
        bad("pretrain.strategy", f"is {pre['strategy']!r} but train.strategy is {t['strategy']!r}: under "
            "multiworker every worker runs every training step; give both 'multiworker'")
    for key in ("epochs", "batch_size", "patience"):
        if t[key] is not None and (t[key] < (0 if key == "patience" else 1)):
            bad(f"train.{key}", f"must be {'>= 0' if key == 'patience' else 'a positive integer'}, got {t[key]}")
    if t["lr"] <= 0:
        bad("train.lr", f"must be > 0, got {t['lr']}")
    if d["image_size"] < 16:
        bad("data.image_size", f"must be at least 16 pixels, got {d['image_size']}")
    if not (0 <= d["val"] < 1 and 0 <= d["test"] < 1 and d["val"] + d["test"] < 1):
        bad("data.val", f"val and test must be fractions in [0, 1) that sum below 1, got {d['val']} and {d['test']}")
    freeze = str(t["freeze"])
    if not (freeze in ("all", "none") or freeze.isdigit()):
        bad("train.freeze", f"must be 'all', 'none' or a number of layers, got {t['freeze']!r}")
    if t["mode"] == "scratch":
        for key in ("weights", "unfreeze_at", "feature_layer"):
            if t[key] is not None:
                bad(f"train.{key}", "only applies to mode 'freeze' or 'cached'; remove it or change train.mode")
    else:
        if not t["weights"]:
            bad("train.weights", f"mode {t['mode']!r} needs pretrained weights: 'imagenet', a path, or 'pretrain'")
        elif t["weights"] == "pretrain" and "pretrain" not in s:
            bad("train.weights", "'pretrain' needs a [pretrain] section that says what to pretrain on")
    if t["mode"] == "cached" and (freeze != "all" or t["unfreeze_at"] is not None or t["augment"]):
        bad("train.mode", "'cached' trains the head on fixed features: use freeze = 'all', no unfreeze_at, no augment")
    if (t["fine_tune_epochs"] > 0) != (t["unfreeze_at"] is not None):
        bad("train.unfreeze_at", "unfreeze_at and fine_tune_epochs (> 0) go together: give both or neither")
    e = s.get("export")
    if e:
        if not 0 <= e["max_drop"] <= 100:
            bad("export.max_drop", f"is in accuracy points (0-100), got {e['max_drop']}")
        if not 0 <= e["target_far"] < 1:
            bad("export.target_far", f"must be in [0, 1), got {e['target_far']}")
        if e["calibration"] < 1:
            bad("export.calibration", f"must be a positive number of images, got {e['calibration']}")
        from toolkit.export.config import FORMATS, QUANTIZATIONS

        for key, allowed in (("formats", FORMATS), ("quantize", QUANTIZATIONS)):
            wrong = [v for v in e[key] if v not in allowed]
            if wrong or not e[key]:
                shown = repr(wrong[0]) if wrong else "(empty)"
                bad(f"export.{key}", f"unknown value {shown}; choose from {', '.join(allowed)}")
    b = s.get("benchmark")
    if b:
        for key in ("threads", "batch"):
            low = 0 if key == "threads" else 1
            if not b[key] or not all(_type_ok(_INT, v) and v >= low for v in b[key]):
                bad(f"benchmark.{key}", f"must be a list of {'non-negative' if key == 'threads' else 'positive'} "
                    f"integers, got {b[key]!r}")


def validate(raw: dict, source: str) -> dict:
    """Check ``raw`` against :data:`SCHEMA`; returns settings with defaults filled in.

    Raises:
        ToolkitError: one line per problem, each naming ``source`` and the key.
    """
    problems: list[str] = []
    settings: dict = {}
    for section, body in raw.items():
        if section not in SCHEMA:
            problems.append(f"[{section}]: unknown section; known: {', '.join(SCHEMA)}")
            continue
        if not isinstance(body, dict):
            problems.append(f"{section}: must be a table ([{section}]), got {type(body).__name__}")
            continue
        for key in body:
            if key not in SCHEMA[section]:
                problems.append(f"{section}.{key}: unknown key; known: {', '.join(SCHEMA[section])}")
    for section in REQUIRED_SECTIONS:
        if not isinstance(raw.get(section), dict):
            problems.append(f"[{section}]: required section is missing")
    for section, rules in SCHEMA.items():
        body = raw.get(section)
        if not isinstance(body, dict):
            if section not in ("pretrain",) and section not in REQUIRED_SECTIONS:
                settings[section] = {k: copy.deepcopy(r["default"]) for k, r in rules.items()}
            continue
        values = {}
        for key, rule in rules.items():
            if key not in body:
                if rule["required"]:
                    problems.append(f"{section}.{key}: required key is missing")
                values[key] = copy.deepcopy(rule["default"])
                continue
            value = body[key]
            if key == "freeze" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # freeze = 40 and freeze = "all" are both natural in TOML
            if not _type_ok(rule["kind"], value):
                got = f"{type(value).__name__} {value!r}"
                problems.append(f"{section}.{key}: must be {_article(rule['kind'])}, got {got}")
            elif rule["choices"] and value not in rule["choices"]:
                problems.append(f"{section}.{key}: must be one of {', '.join(rule['choices'])}, got {value!r}")
            elif rule["low"] is not None and value < rule["low"]:
                want = "a positive integer" if rule["kind"] == _INT and rule["low"] == 1 else f">= {rule['low']}"
                problems.append(f"{section}.{key}: must be {want}, got {value!r}")
            elif rule["above"] is not None and value <= rule["above"]:
                problems.append(f"{section}.{key}: must be > {rule['above']}, got {value!r}")
            values[key] = value
        settings[section] = values
    if not problems:
        _check_values(settings, problems)
    if problems:
        raise ToolkitError("\n".join(f"{source}: {p}" for p in problems))
    return settings


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
