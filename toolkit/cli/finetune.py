"""``toolkit finetune``, ``toolkit cache ls|clear`` and ``toolkit transfer-benchmark``."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli import app
from toolkit.cli.train import (
    INDEX_HELP,
    SCALE_HELP,
    STRATEGY_HELP,
    TIMEOUT_HELP,
    WORKERS_HELP,
    _print_result,
    distribution_options,
    split_list,
)

cache_app = typer.Typer(help="Show or free the penultimate-feature cache ($TOOLKIT_CACHE or ~/.cache/toolkit).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")
bench_app = typer.Typer(help="Transfer-learning benchmarks: cached-feature speed, real transfer, cache memory.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="transfer-benchmark")


@app.command()
def finetune(
    model: str = typer.Argument(..., help="Registered model name: resnet50, happy, resnet_tiny."),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet (Keras' official ResNet50 file, cached in "
                                "~/.keras/models), a .h5/.keras file, or a run folder from 'toolkit train'."),
    data: str = typer.Option(..., "--data", help="The new task's data: image folder, .h5, or synthetic:NAME."),
    out: Path = typer.Option(..., "--out", help="Run folder to create (e.g. runs/smiles-ft)."),
    freeze: str = typer.Option("all", "--freeze", help="all: everything but the new head; none; or N: the first N "
                               "entries of model.layers (input, preprocessing, padding, activation and add layers "
                               "count; see 'toolkit summary MODEL'). Frozen BatchNorm runs in inference mode."),
    cache_features: bool = typer.Option(False, "--cache-features", help="Train only the head on penultimate "
                                        "features computed once and cached on disk (needs --freeze all)."),
    feature_layer: str = typer.Option(None, "--feature-layer", help="Cut the pretrained base at this layer "
                                      "(e.g. res2c_out; default: the penultimate layer, avg_pool for ResNet50). "
                                      "A feature map is flattened. Earlier layers transfer better to a task "
                                      "unlike the pretraining one."),
    unfreeze_at: int = typer.Option(None, "--unfreeze-at", help="Stage 2: train layers K.. (BatchNorm stays frozen)."),
    fine_tune_epochs: int = typer.Option(0, "--fine-tune-epochs", help="Epochs of stage 2."),
    fine_tune_lr: float = typer.Option(1e-5, "--fine-tune-lr", help="Learning rate of stage 2."),
    epochs: int = typer.Option(10, help="Maximum epochs of stage 1 (the head)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate of stage 1."),
    optimizer: str = typer.Option("adam", help="adam, sgd (momentum 0.9) or rmsprop."),
    seed: int = typer.Option(0, help="Seed for the split, head init, shuffling and augmentation."),
    image_size: int = typer.Option(None, "--image-size", help="Input size in pixels (default: the model's, 64)."),
    val: float = typer.Option(0.15, help="Fraction held out for validation."),
    test: float = typer.Option(0.15, help="Fraction held out for the final test."),
    augment: str = typer.Option("", help="Comma list of: flip, rotate, zoom, shear, color, pca (not with cache)."),
    patience: int = typer.Option(5, help="Early-stopping patience in epochs (0: off)."),
    stem: str = typer.Option(None, help="ResNet only: override the stem the weights imply ('seed' or 'keras')."),
    preprocess: str = typer.Option(None, help="Override the preprocessing the weights imply (scale, imagenet)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    strict: bool = typer.Option(False, "--strict", help="Unreadable images are an error, not a warning."),
    deterministic: bool = typer.Option(True, "--deterministic/--fast", help="Reproducible ops (a little slower)."),
    strategy: str = typer.Option("auto", "--strategy", help=STRATEGY_HELP),
    workers: str = typer.Option(None, "--workers", help=WORKERS_HELP),
    worker_index: int = typer.Option(None, "--worker-index", help=INDEX_HELP),
    scale_batch: bool = typer.Option(False, "--scale-batch", help=SCALE_HELP),
    connect_timeout: float = typer.Option(120.0, "--connect-timeout", help=TIMEOUT_HELP),
) -> None:
    """Fine-tune pretrained weights on new data with a new head: frozen layers, two stages, or cached features."""
    from toolkit.train.finetune import FinetuneConfig
    from toolkit.train.finetune import finetune as finetune_fn

    kwargs = {k: v for k, v in (("stem", stem), ("preprocess", preprocess)) if v}
    config = FinetuneConfig(
        model=model, data=data, out=str(out), weights=weights, freeze=freeze, cache_features=cache_features,
        feature_layer=feature_layer, unfreeze_at=unfreeze_at, fine_tune_epochs=fine_tune_epochs,
        fine_tune_lr=fine_tune_lr, epochs=epochs,
        batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed, image_size=image_size, val=val, test=test,
        augment=split_list(augment), patience=patience, resume=resume, strict=strict, deterministic=deterministic,
        model_kwargs=kwargs, **distribution_options(strategy, workers, worker_index, scale_batch, connect_timeout),
    )
    run = finetune_fn(config)
    _print_result(run.path if run is not None else None)


@cache_app.command("ls")
def cache_ls() -> None:
    """List cached feature entries: key, split, images, dimension, size, model."""
    from toolkit.train.features import cache_root, list_cache

    rows = list_cache()
    typer.echo(f"feature cache: {cache_root()}")
    for r in rows:
        if r["complete"]:
            typer.echo(f"{r['key'][:12]}  {r.get('split', '?'):<5} n={r.get('n', '?'):<6} dim={r.get('dim', '?'):<6} "
                       f"{r['bytes'] / 1e6:8.1f} MB  {r.get('model', '')}  {r.get('created', '')}")
        else:
            typer.echo(f"{r['key'][:40]}  unfinished (a killed run; never used)  {r['bytes'] / 1e6:8.1f} MB")
    typer.echo(f"{len(rows)} entries, {sum(r['bytes'] for r in rows) / 1e6:.1f} MB")


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete every cached feature entry."""
    from toolkit.train.features import cache_root, clear_cache

    n, size = clear_cache()
    typer.echo(f"removed {n} entries ({size / 1e6:.1f} MB) from {cache_root()}")


@bench_app.command("speed")
def bench_speed(
    model: str = typer.Option("resnet50", help="Registered model name."),
    weights: str = typer.Option(..., "--weights", help="Pretrained weights: imagenet, a file or a run folder."),
    data: str = typer.Option("synthetic:signs?n=600", "--data"),
    image_size: int = typer.Option(64, "--image-size"),
    epochs: int = typer.Option(3, help="Epochs per side (the first traces graphs; the median is compared)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    work: Path = typer.Option(Path("runs/transfer-speed"), "--work", help="Folder for the two runs (replaced)."),
) -> None:
    """Per-epoch time of the head on cached features against --freeze all on the same data and base."""
    from toolkit.train.transfer_bench import format_speed, speed_benchmark

    typer.echo(format_speed(speed_benchmark(model, weights, data, image_size=image_size, epochs=epochs,
                                            batch_size=batch_size, work=work)))


@bench_app.command("transfer")
def bench_transfer(
    pretrain: str = typer.Option(..., "--pretrain", help="Run folder of a ResNet50 trained with 'toolkit train'."),
    data: str = typer.Option(..., "--data", help="The target image folder, e.g. /work/shared/datasets/smiles."),
    train_n: int = typer.Option(200, "--train-n", help="Images to learn from (15% of them validate)."),
    test_n: int = typer.Option(1000, "--test-n", help="Other images of the same folder to test on."),
    model: str = typer.Option("resnet50", help="The pretrained architecture."),
    image_size: int = typer.Option(64, "--image-size"),
    epochs: int = typer.Option(15, help="Epochs for every contender."),
    work: Path = typer.Option(Path("runs/transfer"), "--work", help="Folder for the runs (replaced)."),
    feature_layer: str = typer.Option("", "--feature-layer", help="Comma list of further cut points to try "
                                      "(e.g. res2c_out,res3d_out), besides the penultimate layer."),
) -> None:
    """Test accuracy of fine-tuned (--freeze, --cache-features) vs from-scratch models on the same small set."""
    from toolkit.train.transfer_bench import format_transfer, transfer_benchmark

    typer.echo(format_transfer(transfer_benchmark(pretrain, data, train_n=train_n, test_n=test_n, model=model,
                                                  image_size=image_size, epochs=epochs, work=work,
                                                  feature_layers=split_list(feature_layer))))


@bench_app.command("memory")
def bench_memory(
    images: int = typer.Option(20000, help="Images in the synthetic folder."),
    model: str = typer.Option("resnet50", help="Base to cache features of (random weights: memory, not accuracy)."),
    image_size: int = typer.Option(64, "--image-size"),
    work: Path = typer.Option(Path("runs/transfer-memory"), "--work", help="Folder for the images and the cache."),
) -> None:
    """Peak resident memory while caching the features of a large image folder (runs in a child process)."""
    from toolkit.train.transfer_bench import memory_benchmark

    r = memory_benchmark(images, model=model, image_size=image_size, work=work)
    typer.echo(f"cached {r['n']} images ({'streamed from disk' if r['streamed'] else 'in memory'}) x {r['dim']} "
               f"features ({r['cache_mb']:.0f} MB on disk) of {model} at "
               f"{image_size}x{image_size} in {r['seconds']:.0f} s; peak resident memory {r['peak_rss_mb']:.0f} MB"
               + ("  (< 2 GB)" if r["peak_rss_mb"] < 2048 else "  (>= 2 GB!)"))
