"""Loading a Keras model file safely: no code from the file runs (no Lambda bytecode, safe-mode archives)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from toolkit.errors import ToolkitError


def load_keras_model(path: str | Path):
    """Load a ``.keras`` or ``.h5`` model file safely (no code from the file is executed).

    Raises:
        ToolkitError: missing, truncated or corrupt file.
    """
    from toolkit._keras import keras

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: model file not found")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ToolkitError(f"{path}: not a Keras model file; give a .keras (or .h5) file or a run folder")
    if path.suffix != ".keras":
        _refuse_code_in_h5(path)
    k = keras()
    try:
        if path.suffix == ".keras":
            return _load_keras_archive(path, k)
        return k.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file; all mean the same to a user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToolkitError(f"{path}: not a loadable Keras model ({first[:200]})") from exc


def _refuse_code_in_h5(path: Path) -> None:
    """Refuse an HDF5 model whose config carries Python code (a Lambda layer's marshalled bytecode).

    Keras' safe_mode covers only the .keras format; loading an .h5 model rebuilds every Lambda from the
    file's bytecode and runs it. The config is read here with h5py, before Keras sees the file.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as exc:
        raise ToolkitError(f"{path}: not a readable HDF5 model file ({str(exc).splitlines()[0][:200]})") from exc
    if raw is None:
        raise ToolkitError(f"{path}: an HDF5 file without a model config (weights only?); give a full model file")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"{path}: unreadable model config ({exc})") from exc
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda" or "function_type" in node:
                raise ToolkitError(f"{path}: the model holds a Lambda layer, whose Python code loading would run; "
                                   "refused (rebuild the model without Lambda layers)")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _load_keras_archive(path: Path, k):
    """A ``.keras`` file through its two members: the architecture (safe mode) and the weights, unpacked.

    Keras' own loader reads the weights file from inside the zip, and before Python 3.12 every backward
    seek in a zip member re-reads the member from its start: loading a 280 MB ResNet50 took 265 s that
    way against 5 s unpacked (same weights, bit for bit).
    """
    import zipfile

    with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as tmp:
        names = set(archive.namelist())
        if "config.json" not in names or "model.weights.h5" not in names:
            return k.models.load_model(path, compile=False, safe_mode=True)  # another layout: Keras decides
        config = json.loads(archive.read("config.json"))
        model = k.saving.deserialize_keras_object(config, safe_mode=True)
        model.load_weights(archive.extract("model.weights.h5", tmp))
    return model
