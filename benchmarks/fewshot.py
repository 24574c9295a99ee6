"""Few-shot accuracy on real photos: ``python -m benchmarks.fewshot --data ../shared/datasets/smiles``.

The door's real use: a household takes 50-200 photos with its own camera. For every training size and
seed, the same recipes learn from the same stratified sample of an image folder and are scored on the
same held-out test images (default 1,000, never sampled for training), clean and through the camera
degradations (``toolkit.degrade``, all four, seed 0). Each recipe is the user's own command line, run
in-process; the cross-validated estimate a recipe prints before training ends is shown beside its test
figure, so one can see whether it told the truth.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import cli
from toolkit.progress import progress

# name -> the toolkit command line (DATA and OUT are filled in); one entry per recipe compared.
RECIPES = {
    "face base + CV head": ["finetune", "face", "--data", "DATA", "--cache-features", "--head", "cv",
                            "--test", "0", "--out", "OUT"],
    "face base + CV head (3 layers)": ["finetune", "face", "--data", "DATA", "--cache-features", "--head", "cv",
                                       "--feature-layer", "batch_normalization_12,add_4,add_3", "--test", "0",
                                       "--out", "OUT"],
    "HappyModel from scratch": ["train", "happy", "--data", "DATA", "--epochs", "40", "--patience", "8",
                                "--test", "0", "--out", "OUT"],
}
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _files(folder: Path) -> dict[str, list[Path]]:
    """label -> sorted image files of a class-per-folder image folder."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    return {c.name: sorted(f for f in c.iterdir() if f.suffix.lower() in EXTENSIONS) for c in classes}


def _link_folder(out: Path, chosen: dict[str, list[Path]]) -> Path:
    """An image folder of symlinks (one per chosen file), so a recipe reads exactly these photos."""
    shutil.rmtree(out, ignore_errors=True)
    for label, files in chosen.items():
        (out / label).mkdir(parents=True)
        for f in files:
            (out / label / f.name).symlink_to(f.resolve())
    return out


def _degraded_copy(src: dict[str, list[Path]], out: Path) -> Path:
    """The test images through every camera degradation (seed 0), written once as PNG."""
    from PIL import Image

    from toolkit.degrade import DEGRADATIONS, degrade_image

    shutil.rmtree(out, ignore_errors=True)
    for label, files in src.items():
        (out / label).mkdir(parents=True)
        for i, f in enumerate(files):
            image = np.asarray(Image.open(f).convert("RGB"))
            bad = degrade_image(image, DEGRADATIONS, np.random.default_rng([0, i]))
            Image.fromarray(bad).save(out / label / (f.stem + ".png"))
    return out


def split_pool(files: dict[str, list[Path]], test_n: int, seed: int = 1234):
    """(test files, the rest): a stratified test set, the same for every size and seed."""
    rng = np.random.default_rng(seed)
    total = sum(len(v) for v in files.values())
    test, pool = {}, {}
    for label, fs in files.items():
        order = rng.permutation(len(fs))
        k = round(test_n * len(fs) / total)
        test[label] = [fs[i] for i in order[:k]]
        pool[label] = [fs[i] for i in order[k:]]
    return test, pool


def sample(pool: dict[str, list[Path]], n: int, seed: int) -> dict[str, list[Path]]:
    """A stratified sample of ``n`` training photos (at least 2 a class)."""
    rng = np.random.default_rng(seed)
    total = sum(len(v) for v in pool.values())
    return {label: [fs[i] for i in rng.choice(len(fs), max(2, round(n * len(fs) / total)), replace=False)]
            for label, fs in pool.items()}


def _cv_estimate(run: Path) -> str:
    """The cross-validated accuracy a run recorded (mean ± std), or '' when its recipe has none."""
    path = run / "config.json"
    head = json.loads(path.read_text()).get("head") if path.is_file() else None
    if isinstance(head, dict) and "accuracy_mean" in head:
        return f"{head['accuracy_mean']:.3f} ± {head['accuracy_std']:.3f}"
    return ""


def run_benchmark(data: Path, sizes, seeds, test_n: int, out: Path, recipes: dict, log=print) -> list[dict]:
    """Train every recipe at every size and seed; score each on the clean and the degraded test images."""
    from toolkit.cli import main
    from toolkit.train.evaluate import evaluate

    files = _files(data)
    test, pool = split_pool(files, test_n)
    clean = _link_folder(out / "test", test)
    degraded = _degraded_copy(test, out / "test-degraded")
    log(f"test: {sum(map(len, test.values()))} images of {data} ({', '.join(f'{k} {len(v)}' for k, v in test.items())})"
        f", never sampled for training; degraded copy in {degraded}")
    rows = []
    with progress("training every recipe", total=len(sizes) * len(seeds) * len(recipes), unit="runs") as shown:
        for n in sizes:
            for seed in seeds:
                train = _link_folder(out / f"train-{n}-{seed}", sample(pool, n, seed))
                for name, template in recipes.items():
                    run = out / f"{''.join(w[0] for w in name.split()).lower()}-{n}-{seed}"
                    shutil.rmtree(run, ignore_errors=True)
                    argv = [str(train) if a == "DATA" else str(run) if a == "OUT" else a for a in template]
                    argv += ["--seed", str(seed)]
                    t0 = time.perf_counter()
                    if main(argv) != 0:
                        raise SystemExit(f"error: {' '.join(argv)} failed")
                    seconds = time.perf_counter() - t0
                    acc = {kind: evaluate(str(run), data=str(folder), out=str(run / f"eval-{kind}"))["accuracy"]
                           for kind, folder in (("clean", clean), ("degraded", degraded))}
                    rows.append({"recipe": name, "n": n, "seed": seed, **acc, "cv": _cv_estimate(run),
                                 "seconds": round(seconds, 1)})
                    log(f"{name:<26} n={n:<4} seed={seed}  clean {acc['clean']:.3f}  degraded {acc['degraded']:.3f}"
                        f"  cv {rows[-1]['cv'] or '-'}  ({seconds:.0f} s)")
                    shown.advance()
    return rows


def format_table(rows: list[dict]) -> str:
    """One line per recipe and size: mean ± std over seeds, clean and degraded, and the CV estimates."""
    lines = ["| recipe | images | test acc (clean) | test acc (degraded) | CV estimate per seed |",
             "|---|---:|---:|---:|---|"]
    for name in dict.fromkeys(r["recipe"] for r in rows):
        for n in dict.fromkeys(r["n"] for r in rows):
            rs = [r for r in rows if r["recipe"] == name and r["n"] == n]
            if not rs:
                continue
            cell = {k: f"{statistics.mean(r[k] for r in rs):.3f} ± {statistics.pstdev([r[k] for r in rs]):.3f}"
                    for k in ("clean", "degraded")}
            cvs = "; ".join(r["cv"] for r in rs if r["cv"]) or "-"
            lines.append(f"| {name} | {n} | {cell['clean']} | {cell['degraded']} | {cvs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("fewshot", __doc__)
    p.add_argument("--data", type=Path, required=True, help="An image folder, one sub-folder per class.")
    p.add_argument("--sizes", type=cli.csv_ints, default=(50, 100, 200), help="Training set sizes.")
    p.add_argument("--seeds", type=cli.csv_ints, default=(1, 2, 3), help="Seeds (sample, split, init).")
    p.add_argument("--test-n", type=int, default=1000, help="Held-out test images (the same for every run).")
    p.add_argument("--recipes", default=",".join(RECIPES), help="Comma list of recipes to run.")
    p.add_argument("--out", type=Path, default=Path("runs/fewshot"), help="Folder for runs and links (replaced).")
    ns = p.parse_args(argv)
    if not ns.data.is_dir():
        p.error(f"--data {ns.data}: not a folder")
    chosen = {k: RECIPES[k] for k in (r.strip() for r in ns.recipes.split(",")) if k in RECIPES}
    if not chosen:
        p.error(f"--recipes: choose from {', '.join(RECIPES)}")
    from toolkit.errors import ToolkitError

    try:
        rows = run_benchmark(ns.data, ns.sizes, ns.seeds, ns.test_n, ns.out, chosen)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (ns.out / "fewshot.json").write_text(json.dumps(rows, indent=1))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
