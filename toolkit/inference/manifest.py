"""``manifest.json``: the contract between an export folder and everything that runs it.

Export writes one manifest per folder; the door runtime trusts nothing else. It names the labels, the
input the files expect (RGB, 0-255, NHWC; preprocessing is inside the model, so a resize is all a
caller does), the output kind, each file's sha256, its validation numbers and, for binary tasks, the
decision threshold chosen on that very file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError

SCHEMA = "toolkit.manifest/2"  # /2: data.kind and data.trained_on say what the figures were measured on
READABLE = ("toolkit.manifest/1", SCHEMA)  # /1 folders still load; their data kind is read off data.spec
MANIFEST_NAME = "manifest.json"


def data_kind(spec: str | None) -> str:
    """'synthetic' for the built-in generators, 'photos' for anything read from files, '' when unknown."""
    if not spec:
        return ""
    return "synthetic" if str(spec).startswith("synthetic:") else "photos"


@dataclass(frozen=True)
class InputSpec:
    name: str = "image"
    shape: tuple = (None, 64, 64, 3)  # NHWC; None = any batch size
    dtype: str = "float32"  # uint8 for int8 TFLite files exported with --uint8-io
    color: str = "RGB"
    range: tuple = (0, 255)  # raw pixels: scaling is the model's first layer

    @property
    def size(self) -> tuple[int, int]:
        return int(self.shape[1]), int(self.shape[2])


@dataclass(frozen=True)
class FileEntry:
    format: str  # "onnx" | "tflite"
    quantization: str  # "none" | "dynamic" | "float16" | "int8" | "qat"
    sha256: str
    bytes: int
    validation: dict = field(default_factory=dict)  # accuracy, float_accuracy, agreement, max_abs_dprob, n
    threshold: float | None = None  # binary tasks: open when P(positive) >= threshold
    far: float | None = None  # false-accept rate at threshold, measured on the validation data
    frr: float | None = None  # false-reject rate it costs
    input_dtype: str | None = None  # overrides InputSpec.dtype for this file
    # int8 files: the layer sensitivity ranking and the layers kept in float (float_layers, ranking, selection_split,
    # drop, drop_95, p50_ms_1thread, bytes); None when not computed (older manifests have no such key)
    mixed_precision: dict | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    model: str
    labels: tuple
    input: InputSpec
    output_kind: str  # "sigmoid": one column, P(labels[1]); "softmax": one column per label
    files: dict  # file name -> FileEntry
    serve: str | None = None  # the ONNX file the runtime loads by default
    target_far: float | None = None
    source_model: dict = field(default_factory=dict)  # path, sha256
    data: dict = field(default_factory=dict)  # spec, split fingerprints, calibration fingerprint
    versions: dict = field(default_factory=dict)  # toolkit and library versions
    # The face detector the model's photos were cropped with, travelling in the folder: kind, file, sha256,
    # licence, input_size, min_score, nms_iou, margin. {} = none (older manifests have no such key).
    detector: dict = field(default_factory=dict)
    # How the files chain. "" (older manifests too): ``serve`` takes the image. "hands": the image goes through
    # the palm and landmark ONNX files named in ``hands`` (with their sha256, licence and source), and ``serve``
    # is the head on the hand features ``hands["features"]`` names (version, set, orientation, dim); an image
    # without a hand is answered "no_hand".
    # "facemesh": the image goes through the detector, landmark and expression ONNX files named in ``face`` (one
    # detector pass feeds both), ``serve`` is the head on the feature blocks ``face["blocks"]`` names, side by
    # side; an image without a face is answered "no_face".
    pipeline: str = ""
    hands: dict = field(default_factory=dict)
    face: dict = field(default_factory=dict)
    # The pretrained base whose weights are inside the model files: kind, source, sha256 of the fetched file,
    # licence (its file in the folder), licence_name. {} = none (own weights only, or an older manifest).
    base: dict = field(default_factory=dict)
    # "features": ``serve`` is a head on the features of the base ONNX file named here: base, sha256, output.
    chain: dict = field(default_factory=dict)
    created: str = ""
    schema: str = SCHEMA

    @property
    def figures_kind(self) -> str:
        """What the threshold, FAR/FRR and accuracies were measured on: 'synthetic', 'photos' or ''."""
        return self.data.get("kind") or data_kind(self.data.get("spec"))

    def synthetic_warning(self, folder: str | Path) -> str | None:
        """One line for a door owner when the manifest's promises were measured on synthetic images only."""
        if self.figures_kind != "synthetic":
            return None
        return (f"{folder}: its threshold and false-accept rate were measured on synthetic images "
                f"({self.data.get('spec')}), not on real photos; check them on your camera's photos: "
                f"toolkit evaluate {folder} --data PHOTOS")

    @property
    def positive_label(self) -> str | None:
        """The label that opens the door in a binary task (the sigmoid's class, ``labels[1]``)."""
        return self.labels[1] if self.output_kind == "sigmoid" else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        d["input"]["shape"] = list(self.input.shape)
        d["input"]["range"] = list(self.input.range)
        d["positive_label"] = self.positive_label
        return d

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_export_folder(source: str | Path, file: str | None = None) -> bool:
    """True when ``source`` is a folder holding ``manifest.json`` (what ``toolkit export`` writes).

    Cheap and TensorFlow-free, so a command can pick the onnxruntime path before importing training code.

    Raises:
        ToolkitError: ``file`` (a file of an export folder to run) is given but ``source`` is not one.
    """
    found = Path(source).is_dir() and (Path(source) / MANIFEST_NAME).is_file()
    if file and not found:
        raise ToolkitError(f"--file {file}: picks a file of an export folder, but {source} has no {MANIFEST_NAME}")
    return found


def load_manifest(folder: str | Path) -> Manifest:
    """Read and validate ``folder/manifest.json``.

    Raises:
        ToolkitError: missing or malformed manifest, with the field at fault named.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ToolkitError(f"{path}: no manifest; point --model at a folder written by 'toolkit export'")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolkitError(f"{path}: not valid JSON ({exc}); re-run 'toolkit export'") from exc
    if not isinstance(raw, dict) or raw.get("schema") not in READABLE:
        raise ToolkitError(f"{path}: field 'schema' must be one of {', '.join(READABLE)}; re-run 'toolkit export'")
    try:
        inp = InputSpec(
            **{**raw["input"], "shape": tuple(raw["input"]["shape"]), "range": tuple(raw["input"]["range"])}
        )
        files = {name: FileEntry(**entry) for name, entry in raw["files"].items()}
        kwargs = {f.name: raw[f.name] for f in dataclasses.fields(Manifest) if f.name in raw}
        kwargs.update(labels=tuple(raw["labels"]), input=inp, files=files)
        manifest = Manifest(**kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise ToolkitError(
            f"{path}: malformed manifest ({type(exc).__name__}: {exc}); re-run 'toolkit export'"
        ) from exc
    if manifest.output_kind not in ("sigmoid", "softmax"):
        raise ToolkitError(f"{path}: field 'output_kind' must be 'sigmoid' or 'softmax', got {manifest.output_kind!r}")
    if manifest.output_kind == "sigmoid" and len(manifest.labels) != 2:
        raise ToolkitError(f"{path}: a sigmoid output needs exactly 2 labels, got {len(manifest.labels)}")
    if manifest.pipeline not in ("", "hands", "facemesh", "features"):
        raise ToolkitError(f"{path}: field 'pipeline' must be '', 'hands', 'facemesh' or 'features', got "
                           f"{manifest.pipeline!r}; "
                           "a newer toolkit wrote it")
    if len(inp.shape) != 4 or inp.shape[3] != 3:
        raise ToolkitError(f"{path}: field 'input.shape' must be [batch, height, width, 3], got {list(inp.shape)}")
    return manifest
