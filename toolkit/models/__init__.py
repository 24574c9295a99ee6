"""Model builders: the seed's HappyModel and ResNet50, looked up by name (see :mod:`.registry`)."""

from toolkit.models.registry import ModelSpec, build_model, get_spec, list_models, register_model

__all__ = ["ModelSpec", "build_model", "get_spec", "list_models", "register_model"]
