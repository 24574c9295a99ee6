"""ExportConfig: one field per ``toolkit export`` flag, with the reason for each default."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import ToolkitError

FORMATS = ("tflite", "onnx")
QUANTIZATIONS = ("none", "dynamic", "float16", "int8", "qat")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class ExportConfig:
    source: str  # a run folder (brings labels, splits and training data) or a .keras/.h5 model file
    out: str  # the export folder; written to a temp dir and renamed, so it is complete or absent
    formats: tuple = FORMATS  # "all" on the command line; one file per format x quantization
    quantize: tuple = ("none",)  # several at once so one folder holds float and int8 files side by side
    data: str | None = None  # validate/calibrate on this data instead of the run's splits (required for model files)
    calibration: int = 300  # representative images from the train split: enough for stable min/max
    calibration_method: str = "minmax"  # ORT static int8; entropy/percentile clip outliers, cost more time
    uint8_io: bool = False  # int8 TFLite only: uint8 in/out, so a camera frame goes in without a cast
    qat_epochs: int = 2  # quantization-aware fine-tuning is short: it starts from the trained float model
    qat_lr: float = 1e-4  # a tenth of Adam's default: nudge the weights, don't retrain
    max_drop: float = 1.0  # accuracy points a file may lose against the float model before export fails
    target_far: float = 0.01  # binary tasks: the threshold admits at most this false-accept rate
    opset: int = 17  # ORT 1.17+ and the Pi's onnxruntime wheels all run opset 17
    overwrite: bool = False  # replace an existing export folder (atomically) instead of refusing
    seed: int = 0  # calibration subset and the split of a bare --data spec

    def __post_init__(self):
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ToolkitError(
                f"--format: unknown format {bad[0] if bad else ''!r}; choose from {', '.join(FORMATS)} or all"
            )
        bad = [q for q in self.quantize if q not in QUANTIZATIONS]
        if bad or not self.quantize:
            raise ToolkitError(
                f"--quantize: unknown quantization {bad[0] if bad else ''!r}; choose from {', '.join(QUANTIZATIONS)}"
            )
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ToolkitError(
                f"--calibration-method must be one of {', '.join(CALIBRATION_METHODS)}, got {self.calibration_method!r}"
            )
        if self.uint8_io and not ("tflite" in self.formats and {"int8", "qat"} & set(self.quantize)):
            raise ToolkitError(
                "--uint8-io applies only to int8 TFLite files: add --format tflite --quantize int8 (or qat)"
            )
        if not isinstance(self.calibration, int) or self.calibration < 1:
            raise ToolkitError(f"--calibration must be a positive number of images, got {self.calibration!r}")
        if not isinstance(self.qat_epochs, int) or self.qat_epochs < 1:
            raise ToolkitError(f"--qat-epochs must be a positive integer, got {self.qat_epochs!r}")
        if not 0 <= self.max_drop <= 100:
            raise ToolkitError(f"--max-drop is in accuracy points (0-100), got {self.max_drop}")
        if not 0 <= self.target_far < 1:
            raise ToolkitError(f"--target-far must be in [0, 1), got {self.target_far}")
        if self.opset < 17:
            raise ToolkitError(f"--opset must be >= 17, got {self.opset}")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, for one-line ToolkitErrors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def parse_list(text: str, allowed: tuple, flag: str) -> tuple:
    """``"none,int8"`` -> ("none", "int8"); ``"all"`` -> all of ``allowed``; order kept, no duplicates."""
    items = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if items == ["all"]:
        return allowed
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ToolkitError(
            f"{flag}: unknown value {bad[0] if bad else text!r}; choose from {', '.join(allowed)} or all"
        )
    return tuple(dict.fromkeys(items))
