"""Model builders: the seed's HappyModel and ResNet50, looked up by name (see :mod:`.registry`)."""

# Importing the builder modules runs their @register_model decorators (they import TF only when called).
from toolkit.models import happy, resnet50  # noqa: F401
from toolkit.models.registry import ModelSpec, build_model, get_spec, list_models, register_model

__all__ = ["ModelSpec", "build_model", "get_spec", "list_models", "register_model"]
