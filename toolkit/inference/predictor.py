"""Run an exported ONNX file with onnxruntime: the door's only model code (numpy, onnxruntime, Pillow).

:class:`Predictor` trusts nothing it has not checked: the file's sha256 must match the manifest, and the
session's input and output names, dtypes and shapes must match the manifest's input spec and output
kind. Preprocessing is inside the model, so a prediction is decode → resize → cast → run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.images import DEFAULT_MAX_PIXELS, ImageSource, decode_image
from toolkit.inference import chain as feature_chain
from toolkit.inference import facepipe
from toolkit.inference.facemesh import face_record
from toolkit.inference.handpipe import FEATURE_INPUT, NO_HAND, PIPELINE, HandPipeline, hand_record
from toolkit.inference.manifest import MANIFEST_NAME, Manifest, load_manifest, sha256_file
from toolkit.inference.sessions import check_head_session as _check_head_session
from toolkit.inference.sessions import check_session as _check_session
from toolkit.inference.sessions import only_onnx as _only_onnx
from toolkit.inference.sessions import open_session as _open_session

DEFAULT_THRESHOLD = 0.5  # binary tasks whose manifest names no threshold


@dataclass(frozen=True)
class Prediction:
    """One image's result.

    ``probability`` is P(positive label) for a sigmoid model (what the door thresholds), the top class's
    probability for softmax. ``decision`` is ``probability >= threshold`` for sigmoid models, None otherwise.
    A hand-sign export answers ``label == "no_hand"`` (probability 1, decision False) when it sees no hand;
    its ``details`` say which hand it saw.
    """

    label: str
    probability: float
    threshold: float | None
    decision: bool | None
    latency_ms: float
    probabilities: dict[str, float]
    details: dict | None = None  # pipeline extras, e.g. {"hand": {"score", "handedness"} or None}

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "probability": self.probability,
            "threshold": self.threshold,
            "decision": self.decision,
            "latency_ms": self.latency_ms,
            "probabilities": self.probabilities,
            **(self.details or {}),
        }


class Predictor:
    """An export folder's ONNX file, checked against its manifest and ready to classify images.

    Thread-safe: the object is immutable after construction and ``InferenceSession.run`` may be called
    from many threads at once.

    Args:
        folder: export folder holding ``manifest.json`` and the ONNX file.
        file: ONNX file name inside ``folder``; None = the manifest's ``serve`` entry.
        threads: onnxruntime intra-op threads (1 = steady latency next to a camera).
        max_pixels: refuse images with more decoded pixels than this.
        threshold: override the manifest's per-file threshold (binary tasks).
        version: a folder of :mod:`toolkit.inference.versions` (an adapted head of this export's chain) whose
            head and thresholds replace the export's own; None = the export's head.

    Raises:
        ToolkitError: missing or tampered file, a file that does not match its manifest, or a version fitted
            on another export.
    """

    def __init__(
        self,
        folder: str | Path,
        file: str | None = None,
        *,
        threads: int = 1,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threshold: float | None = None,
        version: str | Path | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.manifest: Manifest = load_manifest(self.folder)
        where = self.folder / MANIFEST_NAME
        self.file = file or self.manifest.serve or _only_onnx(self.manifest, where)
        # A features export holds its base in several precisions; naming one runs the chain through it, and the
        # head (the file a version replaces) stays the serve entry.
        chain_record = self.manifest.chain
        self.base_file: str | None = None
        if self.manifest.pipeline == feature_chain.PIPELINE:
            chosen = self.file if self.file in feature_chain.bases(chain_record) else chain_record.get("base")
            if self.file != self.manifest.serve and self.file in feature_chain.bases(chain_record):
                self.file = self.manifest.serve
            if chosen in feature_chain.bases(chain_record):
                chain_record = feature_chain.with_base(chain_record, chosen)
            self.base_file = chosen
        entry = self.manifest.files.get(self.file)
        if entry is None:
            raise ToolkitError(
                f"{where}: field 'files' has no entry {self.file!r}; pick one of {sorted(self.manifest.files)}"
            )
        if entry.format != "onnx":
            raise ToolkitError(f"{where}: files[{self.file!r}] is {entry.format!r}, the runtime runs 'onnx' files only")
        self.path = self.folder / self.file
        if not self.path.is_file():
            raise ToolkitError(f"{self.path}: listed in the manifest but missing; re-run 'toolkit export'")
        digest = sha256_file(self.path)
        if digest != entry.sha256:
            raise ToolkitError(
                f"{self.path}: sha256 {digest[:12]}... does not match files[{self.file!r}].sha256 "
                f"{str(entry.sha256)[:12]}... in {where}; "
                "the file changed after export, re-run 'toolkit export'"
            )
        self.labels: tuple[str, ...] = tuple(self.manifest.labels)
        self.size = self.manifest.input.size
        self.dtype = np.dtype(entry.input_dtype or self.manifest.input.dtype)
        self.max_pixels = max_pixels
        figures = entry  # a base variant's chain has its own threshold, measured through that base
        if self.base_file is not None and self.base_file in self.manifest.files:
            figures = self.manifest.files[self.base_file]
        if self.manifest.output_kind == "sigmoid":
            self.threshold: float | None = float(
                threshold
                if threshold is not None
                else figures.threshold
                if figures.threshold is not None
                else DEFAULT_THRESHOLD
            )
        else:
            self.threshold = None
        self.threads = threads
        self._session = _open_session(self.path, threads)
        # A hand-sign export chains palm -> landmarks -> this file (the head on the features hands["features"]
        # names); the answers gain "no_hand", and the v2 tensor's input is still the image.
        self.hands = HandPipeline(self.folder, self.manifest.hands, threads) if self.is_hands else None
        # A face-landmark export chains detector -> face mesh (-> aligned crop -> expression CNN) -> this file (the
        # head on the feature blocks); the answers gain "no_face". Both landmark chains answer through self.hands.
        if self.is_face:
            self.hands = facepipe.open_face_pipeline(self.folder, self.manifest.face, threads)
        # A features export chains base -> this file (the head on the base's features); images keep their input.
        self.chain = (feature_chain.FeatureChain(self.folder, chain_record, lambda p: _open_session(p, threads))
                      if self.manifest.pipeline == feature_chain.PIPELINE else None)
        if self.is_chain:
            dim = self.hands.spec.dim if self.is_hands else None  # a face head's width is checked by its blocks
            self.output_name = _check_head_session(self._session, self.manifest, self.path, where, dim)
            self.input_name = self.manifest.input.name
        else:
            self.input_name, self.output_name = _check_session(self._session, self.manifest, self.dtype, self.path,
                                                               where)
        self.version: dict | None = None
        self.label_thresholds: dict[str, float] = {}  # a version's threshold per label (one against the rest)
        self._head = None  # a version's LinearHead, run in numpy in place of the head file
        if version is not None:
            self._use_version(Path(version), entry.sha256, threshold)

    def _use_version(self, folder: Path, parent_sha256: str, threshold: float | None) -> None:
        from toolkit.inference import versions

        if not self.is_chain:
            raise ToolkitError(f"{self.folder}: {cannot_adapt(self.manifest)}")
        record = versions.read_version(folder)
        self._head = versions.as_float32(versions.head_for(folder, record, parent_sha256, self.labels,
                                                           1 if self.manifest.output_kind == "sigmoid"
                                                           else len(self.labels)))
        self.version = record
        if self.manifest.output_kind == "sigmoid" and threshold is None and record.get("threshold") is not None:
            self.threshold = float(record["threshold"])
        self.label_thresholds = {k: float(v["threshold"]) for k, v in (record.get("thresholds") or {}).items()
                                 if isinstance(v, dict) and v.get("threshold") is not None}

    @property
    def is_chain(self) -> bool:
        """True when the serve file is a head on features computed by other files (hands, a frozen base)."""
        return self.is_hands or self.is_face or self.manifest.pipeline == feature_chain.PIPELINE

    def head(self, x: np.ndarray) -> np.ndarray:
        """The head on (N, D) features: (N, 1) or (N, K) float32, from the version's head or the head file."""
        x = np.asarray(x, np.float32)
        if self._head is not None:
            return np.asarray(self._head(x), np.float32)
        return np.asarray(self._session.run([self.output_name], {FEATURE_INPUT: x})[0], np.float32).reshape(
            len(x), -1)

    def features(self, image: np.ndarray) -> np.ndarray | None:
        """One image's features through the chain's frozen files (None: no hand), what a head is fitted on.

        Raises:
            ToolkitError: the export is one file from image to answer (nothing to refit).
        """
        if self.hands is not None:
            return self.hands.features(image)[0]
        if self.chain is not None:
            return self.chain.run(np.asarray(decode_image(image, self.size, max_pixels=self.max_pixels),
                                             np.float32)[None])[0]
        raise ToolkitError(f"{self.folder}: {cannot_adapt(self.manifest)}")

    @property
    def is_hands(self) -> bool:
        return self.manifest.pipeline == PIPELINE

    @property
    def is_face(self) -> bool:
        return self.manifest.pipeline == facepipe.PIPELINE

    @property
    def answers(self) -> tuple[str, ...]:
        """Every label an answer can carry: the model's, plus "no_hand" ("no_face") for a landmark export."""
        if self.is_face:
            return (*self.labels, facepipe.NO_FACE)
        return (*self.labels, NO_HAND) if self.is_hands else self.labels

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def positive_label(self) -> str | None:
        return self.manifest.positive_label

    def load(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        """Decode any image (bytes, path, RGB array, PIL image) into one HxWx3 model input.

        A hand-sign export keeps the image's own size (the palm detector letterboxes it; small photos are
        upscaled by the pipeline).
        """
        own_size = self.is_hands or self.is_face
        return decode_image(source, None if own_size else self.size, max_pixels=self.max_pixels, name=name)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on an NHWC batch already at the input size; returns (N, K) probabilities.

        Raises:
            ToolkitError: the batch has the wrong shape.
        """
        h, w = self.size
        if batch.ndim != 4 or batch.shape[1:] != (h, w, 3) or batch.shape[0] < 1:
            raise ToolkitError(f"input {self.input_name!r}: expected shape [N, {h}, {w}, 3], got {list(batch.shape)}")
        if self.hands is not None:
            return np.stack([self._run_hand(image)[0] for image in np.clip(batch, 0, 255).astype(np.uint8)])
        if self.chain is not None:
            return self.head(self.chain.run(batch))
        out = self._session.run([self.output_name], {self.input_name: batch.astype(self.dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float32).reshape(batch.shape[0], -1)

    def stream(self):
        """State for one camera stream (a hand-sign or face-landmark export follows the hand or face across frames),
        or None."""
        return self.hands.stream() if self.hands is not None and hasattr(self.hands, "stream") else None

    def run_image(self, image: np.ndarray) -> np.ndarray:
        """One HxWx3 image of its own size through a landmark export's chain: one probability per label, then
        P(no hand / no face)."""
        return self._run_hand(np.asarray(image, np.uint8))[0]

    def _run_hand(self, image: np.ndarray, stream=None):
        """One image through palm -> landmarks -> head: (one probability per label, then P(no hand); the Hand)."""
        x, hand = self.hands.features(image, stream)
        row = np.zeros(len(self.labels) + 1, np.float32)
        if x is None:
            row[-1] = 1.0
            return row, None
        out = self.head(x[None]).reshape(-1)
        row[:-1] = [1.0 - out[0], out[0]] if self.manifest.output_kind == "sigmoid" else out
        return row, hand

    def predict(self, source: ImageSource, name: str | None = None, stream=None) -> Prediction:
        """Classify one image: bytes, a file path, an RGB array (camera frame) or a PIL image.

        ``stream``: from :meth:`stream`, for consecutive frames of one camera (None: judged alone, as a photo).

        Raises:
            ImageError: the image cannot be decoded or is too large.
        """
        if stream is not None and self.hands is not None:
            start = time.perf_counter()
            row, hand = self._run_hand(self.load(source, name), stream)
            return self.interpret(row, (time.perf_counter() - start) * 1000.0, hand)
        return self.predict_batch([source], names=[name])[0]

    def predict_batch(
        self, sources: Sequence[ImageSource], names: Sequence[str | None] | None = None
    ) -> list[Prediction]:
        """Classify several images in one session run; latency is per batch divided by its size."""
        if not sources:
            return []
        start = time.perf_counter()
        names = names or [None] * len(sources)
        if self.hands is not None:  # images keep their own sizes: one at a time
            rows = [self._run_hand(self.load(s, n)) for s, n in zip(sources, names, strict=False)]
            latency = (time.perf_counter() - start) * 1000.0 / len(sources)
            return [self.interpret(row, latency, hand) for row, hand in rows]
        batch = np.stack([self.load(s, n) for s, n in zip(sources, names, strict=False)])
        probs = self.run(batch)
        latency = (time.perf_counter() - start) * 1000.0 / len(sources)
        return [self.interpret(row, latency) for row in probs]

    def interpret(self, row: np.ndarray, latency_ms: float = 0.0, hand=None) -> Prediction:
        """Turn one output row into a :class:`Prediction` (label, probability, decision)."""
        if self.hands is not None:
            return self._interpret_hand(row, latency_ms, hand)
        if self.manifest.output_kind == "sigmoid":
            p = float(row[0])
            decision = bool(p >= self.threshold)
            label = self.labels[1] if decision else self.labels[0]
            probs = {self.labels[0]: 1.0 - p, self.labels[1]: p}
            return Prediction(label, p, self.threshold, decision, latency_ms, probs)
        top = int(np.argmax(row))
        probs = {lab: float(v) for lab, v in zip(self.labels, row, strict=False)}
        return Prediction(self.labels[top], float(row[top]), None, None, latency_ms, probs)

    def _interpret_hand(self, row: np.ndarray, latency_ms: float, hand) -> Prediction:
        probs = {lab: float(v) for lab, v in zip(self.answers, row, strict=True)}
        details = {"face": face_record(hand)} if self.is_face else {"hand": hand_record(hand)}
        if row[-1] >= 1.0:  # no hand (face): an answer of its own, never the least unlikely sign
            return Prediction(self.answers[-1], 1.0, self.threshold, False if self.threshold is not None else None,
                              latency_ms, probs, details)
        if self.manifest.output_kind == "sigmoid":
            p = float(row[1])
            decision = bool(p >= self.threshold)
            return Prediction(self.labels[int(decision)], p, self.threshold, decision, latency_ms, probs, details)
        top = int(np.argmax(row[:-1]))
        return Prediction(self.labels[top], float(row[top]), None, None, latency_ms, probs, details)

    def describe(self) -> dict:
        """The model's identity for logs and the v2 metadata endpoint."""
        return {
            "name": self.name,
            "file": self.file,
            "version": self.version["id"] if self.version else None,
            "sha256": self.manifest.files[self.file].sha256,
            "labels": list(self.answers),
            "output_kind": self.manifest.output_kind,
            "threshold": self.threshold,
            "input": {"name": self.input_name, "dtype": self.dtype.name, "shape": [-1, *self.size, 3]},
            "output": {"name": self.output_name, "shape": [-1, self.output_width]},
        }

    def runtimes(self) -> dict:
        """{model of the chain: the runtime serving it}: MediaPipe's models run their ``.tflite`` under LiteRT when
        the export carries it (:mod:`toolkit.inference.litert`); heads and single-file exports, onnxruntime."""
        chain = self.hands.runtimes() if self.hands is not None and hasattr(self.hands, "runtimes") else {}
        return {**chain, "head" if chain else "model": "onnxruntime"}

    @property
    def output_width(self) -> int:
        if self.is_hands or self.is_face:  # one column per label, then P(no hand / no face)
            return len(self.answers)
        return 1 if self.manifest.output_kind == "sigmoid" else len(self.labels)


def predict_files(folder: str | Path, images: Sequence[str], file: str | None = None, batch: int = 32) -> list[dict]:
    """Label and probability of each image file, run TensorFlow-free on an export folder's ONNX file.

    Rows look like those of ``toolkit.train.evaluate.predict``: ``probability`` is that of the printed label;
    for a sigmoid model the label is the manifest threshold's decision, and ``decision`` says whether the door
    would open.

    Raises:
        ToolkitError: a bad export folder or ``file``; ImageError (a ToolkitError) naming an unreadable image.
    """
    predictor = Predictor(folder, file)
    rows = []
    for start in range(0, len(images), batch):
        names = list(images[start : start + batch])
        for name, p in zip(names, predictor.predict_batch(names, names=names), strict=True):
            rows.append({"image": name, "label": p.label, "probability": p.probabilities[p.label],
                         "probabilities": p.probabilities, "decision": p.decision, "threshold": p.threshold})
    return rows


def cannot_adapt(manifest: Manifest) -> str:
    """One line: why an export whose one file goes from image to answer cannot be refitted on the door."""
    return (f"{manifest.name} is one fully trained model from image to answer (no frozen base + head.onnx chain), "
            "so the door cannot refit it; on a PC, train a head on a frozen base's cached features ('toolkit "
            "finetune MODEL --cache-features') and export that run: it becomes base.onnx -> head.onnx")
