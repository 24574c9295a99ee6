"""The run folder: everything one training run produced, and how to load it back.

```
runs/NAME/
  config.json    the TrainConfig, labels, image size, split fingerprints, library versions
  model.keras    the best checkpoint (lowest validation loss)
  history.csv    one row per finished epoch
  metrics.json   test-split metrics (rewritten by `toolkit evaluate`)
  curves.png     loss and accuracy per epoch
  backup/        the resume state while a run is unfinished (removed when it completes; see resume.py)
  logs/          TensorBoard logs
```
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.models.files import load_keras_model  # noqa: F401 - runs.load_keras_model, as callers know it

CONFIG = "config.json"
MODEL = "model.keras"
HISTORY = "history.csv"
METRICS = "metrics.json"
# How other data (--data) is split for a run that held nothing out of its own: the training defaults
HELD_OUT = {"val": 0.15, "test": 0.15}


@dataclass
class Run:
    path: Path
    config: dict  # the JSON written by toolkit train

    @property
    def model_file(self) -> Path:
        return self.path / MODEL

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.config["labels"])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.config["image_size"]
        return int(h), int(w)

    @property
    def model_name(self) -> str:
        return self.config["train"]["model"]

    def load_model(self):
        return load_keras_model(self.model_file)

    def splits(self, data: str | None = None, strict: bool = False):
        """Re-create the run's train/val/test splits (or load ``data`` instead) at the run's image size.

        ``data`` is split with the run's seed and fractions; when those hold nothing out (a run trained with
        ``--val 0 --test 0``), with :data:`HELD_OUT` instead: ``data`` was given to check the run on.

        Raises:
            ToolkitError: the data changed since training (its fingerprints differ) or its labels do not match
                (integer class names 0..C-1 match by index).
        """
        from toolkit.data import load_data
        from toolkit.data.labels import align_labels

        train = self.config["train"]
        spec = data or train["data"]
        ds = align_labels(load_data(spec, self.image_size, strict=strict or train.get("strict", False)), self.labels)
        val, test = train["val"], train["test"]
        if data is not None and not (val or test):
            val, test = HELD_OUT["val"], HELD_OUT["test"]
        splits = ds.split(seed=train["seed"], val=val, test=test)
        if data is None:
            recorded = self.config.get("fingerprints", {})
            now = splits.fingerprints()
            changed = [k for k in recorded if recorded[k] != now.get(k)]
            if changed:
                raise ToolkitError(f"{spec}: the {changed[0]} split differs from the one {self.path} was trained on "
                                   "(data changed); pass --data to evaluate on other data explicitly")
        return splits


def load_run(path: str | Path) -> Run:
    """Open a run folder written by ``toolkit train``.

    Raises:
        ToolkitError: not a folder, or no config / model in it.
    """
    path = Path(path)
    if not path.is_dir():
        raise ToolkitError(f"{path}: run folder not found")
    cfg = path / CONFIG
    if not cfg.is_file():
        raise ToolkitError(f"{path}: no {CONFIG}; is this a run folder written by 'toolkit train'?")
    try:
        config = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ToolkitError(f"{cfg}: unreadable ({exc})") from exc
    if not (path / MODEL).is_file():
        raise ToolkitError(f"{path}: no {MODEL}; the run did not finish an epoch (re-run with --resume)")
    return Run(path, config)


def resolve_model(source: str | Path):
    """A run folder or a model file -> (keras model, Run or None)."""
    source = Path(source)
    if source.is_dir():
        run = load_run(source)
        return run.load_model(), run
    return load_keras_model(source), None


def versions() -> dict[str, str]:
    """Versions of the toolkit and the libraries that shape its results."""
    import importlib.metadata as md

    from toolkit import __version__

    # The package's own version, not its distribution's: that is named door-camera-toolkit, and a stale
    # `toolkit` distribution (or PyPI's unrelated one) must not answer for it.
    out = {"python": platform.python_version(), "toolkit": __version__}
    for dist in ("tensorflow", "tf-keras", "numpy", "onnx", "onnxruntime", "tf2onnx",
                 "tensorflow-model-optimization", "ai-edge-litert"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def write_json_atomic(path: Path, obj, durable: bool = False) -> None:
    """Write JSON so a crash leaves either the old file or the new one, never half of one.

    ``durable`` also survives a power cut: the file and then its folder entry are synced to the disk.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def load_run_config(path: str | Path):
    """The TrainConfig recorded in a run folder."""
    from toolkit.config import TrainConfig

    cfg = Path(path) / CONFIG
    try:
        return TrainConfig.from_dict(json.loads(cfg.read_text())["train"])
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise ToolkitError(f"{cfg}: unreadable run config ({exc})") from exc


def read_history(path: str | Path) -> list[dict]:
    """Rows of history.csv as dicts of floats, one per finished epoch (a resumed run's repeats dropped)."""
    import csv

    file = Path(path) / HISTORY
    if not file.is_file():
        return []
    rows: dict[int, dict] = {}
    with open(file, newline="") as f:
        for row in csv.DictReader(f):
            try:
                parsed = {k: float(v) for k, v in row.items() if k and v not in (None, "")}
            except ValueError:
                continue  # a header repeated by an appending logger, or a half-written line
            if "epoch" in parsed:
                rows[int(parsed["epoch"])] = parsed
    return [rows[e] for e in sorted(rows)]
