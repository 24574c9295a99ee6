"""``toolkit summary``: a model's layers, parameters and multiply-accumulates."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from toolkit.cli import app


@app.command()
def summary(
    model: str = typer.Argument(..., help="Registered model name (see 'toolkit models')."),
    image_size: int = typer.Option(64, "--image-size", min=16, help="Input height and width in pixels."),
    classes: int = typer.Option(2, "--classes", help="Number of classes of the head."),
    stem: Literal["seed", "keras"] = typer.Option(None, "--stem", help="ResNet only: 'seed' (default) or 'keras'."),
    plot: Path = typer.Option(None, "--plot", help="Also draw the graph to this PNG (needs graphviz)."),
    input: int = typer.Option(None, "--input", hidden=True),  # old spelling of --image-size
) -> None:
    """Print the layer table with parameter counts and multiply-accumulates (MACs)."""
    from toolkit.cli.options import deprecated
    from toolkit.errors import ToolkitError
    from toolkit.models import build_model
    from toolkit.models.summary import format_summary

    kwargs = {"stem": stem} if stem else {}
    net = build_model(model, deprecated("--input", "--image-size", input, image_size), classes, **kwargs)
    typer.echo(format_summary(net))
    if plot:
        from toolkit._keras import keras

        try:
            keras().utils.plot_model(net, to_file=str(plot), show_shapes=True)
        except ImportError as exc:
            raise ToolkitError("drawing the graph needs pydot and graphviz: pip install pydot; "
                               "apt-get install graphviz (or brew install graphviz)") from exc
        typer.echo(f"graph written to {plot}")


@app.command("models")
def models_cmd() -> None:
    """List the registered models."""
    from toolkit.models import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        typer.echo(f"{name:<12} {spec.description}")


@app.command("detector")
def detector_cmd(
    wheel: Path = typer.Option(None, "--wheel", help="A downloaded mediapipe-0.10.21 wheel (default: pip download)."),
    find_links: str = typer.Option(None, "--find-links", help="A local folder of wheels to download from instead."),
    force: bool = typer.Option(False, "--force", help="Convert it from the mediapipe wheel even when it is at hand."),
) -> None:
    """Where the BlazeFace face detector (ONNX, Apache-2.0) is; --force / --wheel convert it from the mediapipe
    wheel into the weights cache (needs the train extra), though the toolkit ships it converted."""
    from toolkit.inference.detector_files import ASSETS, SHIPPED_SHA256
    from toolkit.models.detector import ensure_detector

    path = ensure_detector(wheel, find_links=find_links, force=force)
    shipped = path.parent == ASSETS
    typer.echo(f"{path}" + (f"  (shipped with the toolkit, sha256 {SHIPPED_SHA256[:12]}...; --force converts "
                            "the mediapipe wheel's own copy)" if shipped else ""))
