"""Export: quantize a trained model to TFLite and ONNX, validate every file, write a manifest."""

from toolkit.export.api import export, export_model
from toolkit.export.config import ExportConfig

__all__ = ["ExportConfig", "export", "export_model"]
