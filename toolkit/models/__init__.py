"""Model builders: HappyModel, ResNet50, the face base and any Keras model, looked up by name (see :mod:`.registry`)."""

# Importing the builder modules runs their @register_model decorators (they import TF only when called);
# external adds the resolver for model files and keras:NAME.
from toolkit.models import external, face, happy, resnet50  # noqa: F401
from toolkit.models.registry import ModelSpec, build_model, get_spec, list_models, register_model

__all__ = ["ModelSpec", "build_model", "get_spec", "list_models", "register_model"]
