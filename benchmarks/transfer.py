"""Numbers behind the transfer-learning claims: ``python -m benchmarks.transfer speed|transfer|memory``.

- ``speed``: seconds per epoch of the head on cached features against ``--freeze all`` on the same
  data and base (both from the same pretrained weights), the one-time caching cost, and test accuracy.
- ``transfer``: a pretrained ResNet50 fine-tuned (``--freeze all``, ``--cache-features``, cut at its
  penultimate layer and at any ``--feature-layer`` given) against HappyModel and ResNet50 from scratch,
  all on the same small set, scored on the same test split.
- ``memory``: peak resident memory (ru_maxrss) while caching the features of a large image folder,
  measured in a child process so this process's own memory does not count.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import cli
from toolkit.progress import progress
from toolkit.train import runs


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _test_accuracy(run: runs.Run) -> float:
    return float(json.loads((run.path / runs.METRICS).read_text())["accuracy"])


def speed_benchmark(model: str, weights: str, data: str, *, image_size: int = 64, epochs: int = 3,
                    batch_size: int = 32, out: Path = Path("runs/transfer-speed")) -> dict:
    """Train the same head both ways for ``epochs`` epochs; the feature cache is private to ``out``.

    The median epoch after the first (which traces graphs) is compared, because the machine may be shared.
    """
    import os

    from toolkit.train.features import CACHE_ENV
    from toolkit.train.finetune import FinetuneConfig, finetune

    work = _fresh(Path(out))
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(work / "cache")  # an empty cache: the caching cost is really paid
    try:
        common = dict(model=model, weights=weights, data=data, epochs=epochs, batch_size=batch_size,
                      image_size=image_size, patience=0)
        t0 = time.perf_counter()
        cached = finetune(FinetuneConfig(out=str(work / "cached"), cache_features=True, head="keras", **common))
        cached_total = time.perf_counter() - t0
        t0 = time.perf_counter()
        frozen = finetune(FinetuneConfig(out=str(work / "frozen"), freeze="all", **common))
        frozen_total = time.perf_counter() - t0
    finally:
        if old is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = old
    tc, tf_ = _epoch_times(cached), _epoch_times(frozen)
    later = slice(1, None) if epochs > 1 else slice(None)
    feats = json.loads((cached.path / "features.json").read_text())
    return {
        "model": model, "weights": weights, "data": data, "image_size": image_size,
        "sizes": cached.config["sizes"], "dim": feats["dim"],
        "cached_epoch_s": tc.tolist(), "frozen_epoch_s": tf_.tolist(),
        "speedup": float(np.median(tf_[later]) / np.median(tc[later])),
        "cache_s": feats["cache_seconds"], "cached_total_s": cached_total, "frozen_total_s": frozen_total,
        "cached_acc": _test_accuracy(cached), "frozen_acc": _test_accuracy(frozen),
    }


def _epoch_times(run: runs.Run) -> np.ndarray:
    """Seconds per epoch as recorded in history.csv (the same EpochTimer on both sides)."""
    return np.array([row["epoch_time"] for row in runs.read_history(run.path) if "epoch_time" in row])


def format_speed(r: dict) -> str:
    lines = [f"{r['model']} at {r['image_size']}x{r['image_size']}, weights {r['weights']}, data {r['data']}: "
             f"{r['sizes']['train']} train / {r['sizes']['val']} val / {r['sizes']['test']} test images, "
             f"{r['dim']}-d features",
             f"{'epoch':>5} {'cached head s':>14} {'--freeze all s':>15}"]
    for i, (a, b) in enumerate(zip(r["cached_epoch_s"], r["frozen_epoch_s"]), start=1):
        lines.append(f"{i:>5} {a:>14.3f} {b:>15.3f}")
    lines += [f"speed-up per epoch (median after epoch 1): {r['speedup']:.1f}x",
              f"one-time feature caching (train+val+test through the base): {r['cache_s']:.1f} s",
              f"whole run: cached {r['cached_total_s']:.1f} s, --freeze all {r['frozen_total_s']:.1f} s",
              f"test accuracy: cached {r['cached_acc']:.4f}, --freeze all {r['frozen_acc']:.4f} "
              f"(difference {abs(r['cached_acc'] - r['frozen_acc']) * 100:.1f} points)"]
    return "\n".join(lines)


def transfer_benchmark(pretrain: str, data: str, *, train_n: int = 200, test_n: int = 1000, model: str = "resnet50",
                       image_size: int = 64, epochs: int = 15, out: Path = Path("runs/transfer"),
                       feature_layers: tuple = ()) -> list[dict]:
    """Contenders on the same ``train_n`` images (15% of them for validation), tested on ``test_n`` others.

    HappyModel and ``model`` from scratch; the pretrained ``model`` with ``--freeze all`` and with
    ``--cache-features``, cut at its penultimate layer and then at each of ``feature_layers``.
    One stratified subsample of ``train_n + test_n`` images is split once with a fixed seed, so every
    contender trains and is scored on exactly the same images.
    """
    import os

    from toolkit.config import TrainConfig
    from toolkit.data import load_data
    from toolkit.train.features import CACHE_ENV
    from toolkit.train.finetune import FinetuneConfig, finetune
    from toolkit.train.fit import train

    runs.load_run(pretrain)  # a clear error before any work
    work = _fresh(Path(out))
    os.environ.setdefault(CACHE_ENV, str(work / "cache"))
    total = train_n + test_n
    data = f"{data}?n={total}&seed=1"
    ds = load_data(data, image_size)  # loaded once; every contender splits it with the same seed
    common = dict(data=data, epochs=epochs, image_size=image_size, batch_size=16,
                  test=test_n / total, val=0.15 * train_n / total)
    contenders = [
        ("happy from scratch", lambda out: train(TrainConfig(model="happy", out=out, **common), data=ds)),
        (f"{model} from scratch", lambda out: train(TrainConfig(model=model, out=out, **common), data=ds)),
    ]
    for layer in (None, *feature_layers):
        at = f" at {layer}" if layer else ""
        contenders += [
            (f"{model} pretrained, --freeze all{at}",
             lambda out, layer=layer: finetune(FinetuneConfig(model=model, weights=pretrain, out=out,
                                                              feature_layer=layer, **common), data=ds)),
            (f"{model} pretrained, --cache-features{at}",
             lambda out, layer=layer: finetune(FinetuneConfig(model=model, weights=pretrain, out=out,
                                                              cache_features=True, head="keras",  # as measured
                                                              feature_layer=layer, **common),
                                               data=ds)),
        ]
    rows = []
    with progress("training every contender", total=len(contenders), unit="runs") as shown:
        for i, (name, fn) in enumerate(contenders):
            t0 = time.perf_counter()
            run = fn(str(work / f"c{i}"))
            m = json.loads((run.path / runs.METRICS).read_text())
            sizes = run.config["sizes"]
            rows.append({"contender": name, "test_accuracy": m["accuracy"], "test_n": m["n"],
                         "train_n": f"{sizes['train']}+{sizes['val']}", "seconds": time.perf_counter() - t0,
                         "run": str(run.path)})
            shown.advance()
    return rows


def format_transfer(rows: list[dict]) -> str:
    lines = [f"{'contender':<56} {'train+val':>9} {'test n':>6} {'test acc':>8} {'seconds':>8}"]
    lines += [f"{r['contender']:<56} {r['train_n']:>9} {r['test_n']:>6} {r['test_accuracy']:>8.4f} "
              f"{r['seconds']:>8.1f}" for r in rows]
    return "\n".join(lines)


_MEMORY_CHILD = """
import json, resource, sys, time
from toolkit.data import load_data
from toolkit.models import build_model, get_spec
from toolkit.train import features as F
folder, model, size, cache = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ds = load_data(folder, size, max_in_memory_bytes=64 << 20)  # stream: as if larger than RAM
split = ds.split(seed=0, val=0.0, test=0.0).train
net = build_model(model, size, len(ds.labels))
base = F.base_model(net, get_spec(model).penultimate)
t0 = time.perf_counter()
f = F.cache_features(base, split, weights_hash=F.base_hash(base), layer=get_spec(model).penultimate, root=cache)
print(json.dumps({"n": len(f), "dim": int(f.x.shape[1]), "streamed": split.streamed,
                  "seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory_benchmark(images: int = 20000, *, model: str = "resnet50", image_size: int = 64,
                     out: Path = Path("runs/transfer-memory")) -> dict:
    """Write a synthetic image folder of ``images`` files (kept between runs) and cache its features."""
    from toolkit.data.export import write_image_folder

    work = Path(out)
    folder = work / f"signs-{images}"
    if not (folder / ".complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        write_image_folder(f"synthetic:signs?n={images}", folder, image_size)
        (folder / ".complete").touch()
    cache = _fresh(work / "cache")
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(folder), model, str(image_size), str(cache)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"memory benchmark child failed: {out.stderr.strip().splitlines()[-1:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["cache_mb"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 1e6
    return r


def format_memory(r: dict, model: str, image_size: int) -> str:
    return (f"cached {r['n']} images ({'streamed from disk' if r['streamed'] else 'in memory'}) x {r['dim']} "
            f"features ({r['cache_mb']:.0f} MB on disk) of {model} at {image_size}x{image_size} in "
            f"{r['seconds']:.0f} s; peak resident memory {r['peak_rss_mb']:.0f} MB"
            + ("  (< 2 GB)" if r["peak_rss_mb"] < 2048 else "  (>= 2 GB!)"))


def main(argv: list[str] | None = None) -> int:
    """``speed``, ``transfer`` or ``memory``: run that benchmark and print its table."""
    parser = cli.parser("transfer", __doc__)
    sub = parser.add_subparsers(dest="which", required=True, metavar="speed|transfer|memory",
                                parser_class=cli.Parser)
    speed = sub.add_parser("speed", help="per-epoch time of the head on cached features against --freeze all")
    speed.add_argument("--model", default="resnet50", help="registered model name (default resnet50)")
    speed.add_argument("--weights", required=True, help="pretrained weights: imagenet, a file or a run folder")
    speed.add_argument("--data", default="synthetic:signs?n=600")
    speed.add_argument("--image-size", type=cli.positive(int), default=64)
    speed.add_argument("--epochs", type=cli.positive(int), default=3,
                       help="epochs per side (the first traces graphs; the median is compared)")
    speed.add_argument("--batch-size", type=cli.positive(int), default=32)
    speed.add_argument("--out", type=Path, default=Path("runs/transfer-speed"),
                       help="folder for the two runs (replaced)")
    tr = sub.add_parser("transfer", help="test accuracy of fine-tuned vs from-scratch models on one small set")
    tr.add_argument("--pretrain", required=True, help="run folder of a ResNet50 trained with 'toolkit train'")
    tr.add_argument("--data", required=True, help="the target image folder, e.g. /work/shared/datasets/smiles")
    tr.add_argument("--train-n", type=cli.positive(int), default=200, help="images to learn from (15%% validate)")
    tr.add_argument("--test-n", type=cli.positive(int), default=1000, help="other images of the folder to test on")
    tr.add_argument("--model", default="resnet50", help="the pretrained architecture")
    tr.add_argument("--image-size", type=cli.positive(int), default=64)
    tr.add_argument("--epochs", type=cli.positive(int), default=15, help="epochs for every contender")
    tr.add_argument("--out", type=Path, default=Path("runs/transfer"), help="folder for the runs (replaced)")
    tr.add_argument("--feature-layer", default="", help="comma list of further cut points to try "
                    "(e.g. res2c_out,res3d_out), besides the penultimate layer")
    mem = sub.add_parser("memory", help="peak resident memory while caching a large folder's features")
    mem.add_argument("--images", type=cli.positive(int), default=20000, help="images in the synthetic folder")
    mem.add_argument("--model", default="resnet50", help="base to cache features of (random weights)")
    mem.add_argument("--image-size", type=cli.positive(int), default=64)
    mem.add_argument("--out", type=Path, default=Path("runs/transfer-memory"),
                     help="folder for the images and the cache")
    ns = parser.parse_args(argv)
    if ns.which == "speed":
        print(format_speed(speed_benchmark(ns.model, ns.weights, ns.data, image_size=ns.image_size,
                                           epochs=ns.epochs, batch_size=ns.batch_size, out=ns.out)))
    elif ns.which == "transfer":
        layers = tuple(x.strip() for x in ns.feature_layer.split(",") if x.strip())
        print(format_transfer(transfer_benchmark(ns.pretrain, ns.data, train_n=ns.train_n, test_n=ns.test_n,
                                                 model=ns.model, image_size=ns.image_size, epochs=ns.epochs,
                                                 out=ns.out, feature_layers=layers)))
    else:
        r = memory_benchmark(ns.images, model=ns.model, image_size=ns.image_size, out=ns.out)
        print(format_memory(r, ns.model, ns.image_size))
    return 0


if __name__ == "__main__":
    cli.run(main)
