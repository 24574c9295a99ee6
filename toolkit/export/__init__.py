"""Export: quantize a trained model to TFLite and ONNX, validate every file, write a manifest."""

from toolkit.export.config import ExportConfig

__all__ = ["ExportConfig", "export", "export_model"]


def __getattr__(name: str):
    # the exporters pull TensorFlow; the CLI needs only the config to build its options
    if name in ("export", "export_model"):
        from toolkit.export import api

        return getattr(api, name)
    raise AttributeError(name)
