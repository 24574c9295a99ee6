"""``toolkit face-model``: a smile door model on face landmarks and expression features, built and exported."""

from __future__ import annotations

import typer

from toolkit.cli import app


@app.command("face-model")
def face_model_cmd(
    data: str = typer.Option(..., "--data", help="An image folder of no_smile/ and smile/ photos (any size)."),
    out: str = typer.Option(..., "--out", help="The export folder to write (e.g. exported/happy)."),
    blocks: str = typer.Option("auto", "--blocks", help="Head features: auto (best grouped-CV accuracy), "
                               "expression, landmarks or fused (both side by side)."),
    augment: str = typer.Option("colorcast,lowres,blur,jpeg", "--augment", help="Camera degradations each "
                                "training photo is also cached through ('' for none); the threshold is chosen "
                                "on their out-of-fold scores."),
    target_far: float = typer.Option(0.05, "--target-far", help="False-accept rate the threshold is chosen for."),
    test: float = typer.Option(0.2, "--test", help="Share of photos held out for the figures and validation."),
    cv_max_images: int = typer.Option(2000, "--cv-max-images", help="At most this many photos (copies not "
                                      "counted) for the head."),
    folds: int = typer.Option(5, "--cv-folds", help="Cross-validation folds (grouped: a photo with its copies)."),
    c_grid: str = typer.Option("", "--c-grid", help="C values to cross-validate, e.g. 0.001,0.01,0.1 "
                               "(default: the cv head's grid; fewer is faster on thousands of copies)."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Face landmarks (MediaPipe's face mesh) + expression features (fer) -> a CV head -> a door export."""
    from toolkit.degrade import DEGRADATIONS
    from toolkit.errors import ToolkitError
    from toolkit.export.facemesh import FaceModelConfig, build_face_model

    kinds = tuple(k.strip() for k in augment.split(",") if k.strip())
    unknown = [k for k in kinds if k not in DEGRADATIONS]
    if unknown:
        raise ToolkitError(f"--augment {unknown[0]!r}: choose from {', '.join(DEGRADATIONS)}")
    if not 0 < target_far < 1:
        raise ToolkitError(f"--target-far {target_far}: give a rate between 0 and 1, e.g. 0.05")
    try:
        cs = tuple(float(v) for v in c_grid.split(",") if v.strip())
    except ValueError:
        raise ToolkitError(f"--c-grid {c_grid!r}: give numbers separated by commas, e.g. 0.001,0.01,0.1") from None
    config = FaceModelConfig(data=data, out=out, blocks=blocks, augment=kinds, target_far=target_far, test=test,
                             cv_max_images=cv_max_images, folds=folds, cs=cs, seed=seed, overwrite=overwrite)
    build_face_model(config, log=typer.echo)
