"""ExportConfig: the settings of ``toolkit export`` and a pipeline's ``[export]``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.degrade import DEGRADATIONS
from toolkit.settings import SettingError, check, setting

FORMATS = ("tflite", "onnx")
QUANTIZATIONS = ("none", "dynamic", "float16", "int8", "qat")
DETECTORS = ("none", "blazeface")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
MIXED_PRECISION = ("auto", "off")


@dataclass(frozen=True)
class ExportConfig:
    source: str = setting(help="A run folder (from 'toolkit train'), or a .keras/.h5 model file (then give --data).",
                          argument=True)
    # written to a temp dir and renamed, so it is complete or absent
    out: str = setting(help="Export folder to create, e.g. exported/happy.")
    formats: tuple = setting(FORMATS, "File formats (comma list); one file per format x quantization.",
                             choices=FORMATS, every="all", flag="--format")
    # several at once, so one folder holds float and int8 files side by side
    quantize: tuple = setting(("none",), "Quantizations (comma list); each file is validated against the float "
                              "model.", choices=QUANTIZATIONS, every="all")
    data: str | None = setting(None, "Validate and calibrate on this data instead of the run's splits (required "
                               "for model files).")
    strict: bool = setting(False, "Unreadable images in --data are an error instead of a skipped warning.")
    # enough representative images for stable min/max ranges
    calibration: int = setting(300, "Training images used to calibrate int8 ranges.", low=1)
    # entropy/percentile clip outliers and cost more time
    calibration_method: str = setting("minmax", "How ONNX int8 ranges are chosen.", choices=CALIBRATION_METHODS)
    # off: ranges from the training images as they are; a door camera's frames are darker, blurrier, blockier
    calibration_degrade: tuple = setting((), "Draw the int8 calibration images through these camera degradations "
                                         "(comma list; each on half the images, as in training).",
                                         choices=DEGRADATIONS, every="all")
    # a camera frame then goes in without a cast
    uint8_io: bool = setting(False, "int8 TFLite files with uint8 input/output tensors.")
    # short: it starts from the trained float model
    qat_epochs: int = setting(2, "Quantization-aware fine-tuning epochs.", low=1)
    qat_lr: float = setting(1e-4, "Learning rate of the QAT fine-tuning (a tenth of Adam's default).", above=0)
    # 0.5: int8 that loses nothing measurable on a test split of ~200 images (one image is ~0.5 points)
    max_drop: float = setting(0.5, "Accuracy points a file may lose against the float model before the export "
                              "fails.", low=0, high=100)
    # auto: an int8 file that misses --max-drop keeps its most sensitive layers in float until it passes
    mixed_precision: str = setting("auto", "int8 files that miss --max-drop: keep the layers int8 hurts most in "
                                   "float, chosen on the val split (auto), or fail at once (off).",
                                   choices=MIXED_PRECISION)
    # costs one quantized variant per layer, so only on request (or when mixed precision needs the ranking)
    explain: bool = setting(False, "Print each int8 file's 10 layers quantization hurts most (error, share of MACs) "
                            "and keep the ranking in the manifest.")
    target_far: float = setting(0.01, "Binary tasks: the false-accept rate the door's threshold allows.", low=0,
                                below=1)
    opset: int = setting(17, "ONNX opset (ORT 1.17+ and the Pi's onnxruntime wheels all run 17).", low=17)
    # the door crops faces with the very file its model was trained with, and a Pi never fetches anything
    detector: str = setting("none", "Face detector copied into the export folder (with its licence) and used by "
                            "'door run'.", choices=DETECTORS)
    overwrite: bool = setting(False, "Replace an existing export folder (atomically) instead of refusing.")
    seed: int = setting(0, "Seed of the calibration sample and of a bare --data spec's split.", low=0)

    def __post_init__(self):
        check(self)
        if self.uint8_io and not ("tflite" in self.formats and {"int8", "qat"} & set(self.quantize)):
            raise SettingError("uint8_io", "applies only to int8 TFLite files: add --format tflite --quantize int8 "
                               "(or qat)")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, for one-line ToolkitErrors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


FACE_BLOCKS = ("auto", "expression", "landmarks", "fused")


@dataclass(frozen=True)
class FaceModelConfig:
    """``toolkit face-model`` and a pipeline's ``[face]`` (``train.mode = "face"``): the face-landmark door model."""

    data: str = setting(help="An image folder of no_smile/ and smile/ photos (any size; full door frames are best).")
    out: str = setting(help="The export folder to write.")
    blocks: str = setting("auto", "Head features: auto (best grouped-CV accuracy), expression, landmarks or fused "
                          "(both side by side).", choices=FACE_BLOCKS)
    # the copies are what a new camera looks like to the head; the threshold is chosen on their scores
    augment: tuple = setting(("colorcast", "lowres", "blur", "jpeg"), "Camera degradations each training photo is "
                             "also cached through; the threshold is chosen on their out-of-fold scores.",
                             choices=DEGRADATIONS)
    target_far: float = setting(0.05, "False-accept rate the threshold is chosen for.", above=0, below=1)
    test: float = setting(0.2, "Share of photos held out for the figures and the end-to-end validation.",
                          above=0, below=1)
    cv_max_images: int = setting(2000, "At most this many photos (copies not counted) for the head.", low=1)
    folds: int = setting(5, "Cross-validation folds (grouped: a photo with its copies).", low=2)
    # thousands of copies x 3,452 fused features make each fit slow: a short grid is the way to pay for fewer
    cs: tuple = setting((), "C values to cross-validate (default: the cv head's grid).", item="number")
    seed: int = setting(0, "Seed for the split, the subsample and the copies.", low=0)
    overwrite: bool = setting(False, "Replace an existing output folder.")
    name: str | None = setting(None, "The export's name (default: the folder's).")
