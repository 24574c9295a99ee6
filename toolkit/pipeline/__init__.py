"""Declarative pipelines (``pipelines/*.toml``): data → train → export → benchmark → report."""

from toolkit.pipeline.spec import Pipeline, load_pipeline

__all__ = ["Pipeline", "load_pipeline"]
