"""``toolkit data ...``: inspect data sources and write the synthetic sets as image folders."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli import app

data_app = typer.Typer(help="Inspect data sources and write built-in synthetic sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth")
def synth(
    name: str = typer.Argument(..., help="Synthetic task: happy or signs."),
    out: Path = typer.Option(..., "--out", help="Folder to create; gets one sub-folder per class."),
    count: int = typer.Option(None, "--count", min=1, help="Number of images (default: 600 happy, 1080 signs)."),
    seed: int = typer.Option(0, "--seed", help="Generator seed; the same seed draws the same images."),
    image_size: int = typer.Option(64, "--image-size", min=16, help="Image height and width in pixels."),
    n: int = typer.Option(None, "--n", hidden=True),  # old spelling of --count
    size: int = typer.Option(None, "--size", hidden=True),  # old spelling of --image-size
) -> None:
    """Write a synthetic set as an image folder OUT/<label>/<index>.png."""
    from toolkit.cli.options import deprecated
    from toolkit.data.export import write_image_folder

    n = deprecated("--n", "--count", n, count)
    size = deprecated("--size", "--image-size", size, image_size)

    query = f"?seed={seed}" + (f"&n={n}" if n is not None else "")
    count = write_image_folder(f"synthetic:{name}{query}", out, size)
    typer.echo(f"wrote {count} images to {out}")


@data_app.command("inspect")
def inspect(
    spec: str = typer.Argument(..., help="Image folder, .h5 file or synthetic:NAME, optionally ?n=N&seed=S."),
    image_size: int = typer.Option(64, "--image-size", min=16, help="Image height and width the loader resizes to."),
    grid: Path = typer.Option(None, "--grid", help="Also write a PNG grid of samples per class here."),
    strict: bool = typer.Option(False, "--strict", help="Fail on unreadable files instead of skipping them."),
    size: int = typer.Option(None, "--size", hidden=True),  # old spelling of --image-size
) -> None:
    """Print counts per class, image sizes and modes, duplicates, label conflicts and skipped files."""
    import logging

    from toolkit.cli.options import deprecated

    size = deprecated("--size", "--image-size", size, image_size)

    from toolkit.data import load_data

    # The report printed below lists every problem; the loader's warnings would say it twice.
    logger = logging.getLogger("toolkit.data")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        ds = load_data(spec, size, strict=strict)
    finally:
        logger.setLevel(level)
    for line in ds.report.lines():
        typer.echo(line)
    if grid is not None:
        from toolkit.data.export import write_grid

        write_grid(ds, grid)
        typer.echo(f"sample grid: {grid}")
