"""A frozen base and a head as two ONNX files: the export of a head trained on a base's cached features.

An export folder of this pipeline (``manifest["pipeline"] == "features"``) holds::

    base ONNX   image [N, H, W, 3] (0-255) -> features [N, D]   } file and sha256 in manifest["chain"]
    head ONNX   features [N, D] -> class probabilities          (the manifest's ``serve`` entry)

``chain["base"]`` is the base the door runs; ``chain["bases"]`` ({file: sha256}) lists every variant the folder
holds (float, int8, ...), each also a ``files`` entry with its own end-to-end validation and threshold: a
:class:`~toolkit.inference.predictor.Predictor` given one of them as ``file`` runs the chain through that base.

Only the head depends on the camera: the door refits it from owner-labelled snapshots
(:mod:`toolkit.inference.versions`) and the base stays as exported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.manifest import sha256_file

PIPELINE = "features"  # manifest["pipeline"] of a base + head chain


def bases(record: dict) -> dict[str, str]:
    """{base file: sha256} of every base variant of a features export (an older manifest: its one base)."""
    if not isinstance(record, dict):
        return {}
    listed = record.get("bases")
    if isinstance(listed, dict) and listed:
        return {str(k): str(v) for k, v in listed.items()}
    return {record["base"]: record.get("sha256")} if isinstance(record.get("base"), str) else {}


def with_base(record: dict, name: str) -> dict:
    """``record`` running the variant ``name`` of :func:`bases` instead of its default base."""
    return {**record, "base": name, "sha256": bases(record)[name]}


class FeatureChain:
    """The base ONNX file of a ``features`` export, checked by sha256 against its manifest.

    Raises:
        ToolkitError: the file missing, changed after export, or a manifest without a ``chain`` record.
    """

    def __init__(self, folder: Path, record: dict, open_session: Callable[[Path], object]) -> None:
        where = Path(folder) / "manifest.json"
        name = record.get("base") if isinstance(record, dict) else None
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise ToolkitError(f"{where}: field 'chain.base' must name the base ONNX file; re-run 'toolkit export'")
        path = Path(folder) / name
        if not path.is_file():
            raise ToolkitError(f"{path}: the base listed in the manifest is missing; re-run 'toolkit export'")
        if record.get("sha256") is None or sha256_file(path) != record["sha256"]:
            raise ToolkitError(f"{path}: sha256 does not match chain.sha256 in {where}; the file changed after "
                               "export, re-run 'toolkit export'")
        self.path = path
        self.session = open_session(path)  # the Predictor's opener: same threads and options as its head
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ToolkitError(f"{path}: a base takes one image tensor and returns the features ({where})")
        self.input_name = inputs[0].name
        wanted = record.get("output", outputs[0].name)
        if wanted not in [o.name for o in outputs]:
            raise ToolkitError(f"{path}: no output {wanted!r} (chain.output in {where})")
        self.output_name = wanted

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, D) float32 features of an NHWC batch already at the input size."""
        out = self.session.run([self.output_name], {self.input_name: batch.astype(np.float32, copy=False)})[0]
        return np.asarray(out, np.float32).reshape(batch.shape[0], -1)
