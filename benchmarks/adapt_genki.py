"""A smile export adapted to GENKI-4K's crops (many cameras) with ``toolkit door adapt``'s own function.

    python -m benchmarks.adapt_genki --model EXPORT [--per-class 10,25,50] [--others 200]

For each count: that many labelled crops per class (a seeded draw) -> ``adapt()`` into a fresh state folder; the
shipped head and the adapted version are scored at their thresholds on ``--others`` other crops per class (never
labelled), through the door's Predictor (the crops are faces already: no detector). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

GENKI = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "genki"
LABELS = ("no_smile", "smile")


def score(predictor, others) -> tuple[float, float, float]:
    """(accuracy, FAR, FRR) of the predictor's decisions on (file, label index) pairs."""
    rows = predictor.predict_batch([str(f) for f, _ in others])
    y = np.array([i for _, i in others])
    d = np.array([bool(r.decision) for r in rows])
    return float(np.mean(d == y)), float(np.mean(d[y == 0])), float(np.mean(~d[y == 1]))


def main(argv=None) -> int:
    from toolkit.inference import versions
    from toolkit.inference.predictor import Predictor
    from toolkit.runtime.adapt import AdaptConfig, adapt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a binary smile export that can be adapted (a chain)")
    ap.add_argument("--data", default=str(GENKI), help="GENKI-4K crops: no_smile/ and smile/")
    ap.add_argument("--per-class", default="10,25,50")
    ap.add_argument("--others", type=int, default=200, help="held-out crops per class")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "smile").is_dir():
        print(f"{data}: no GENKI crops (see /work/shared/datasets/genki/README.md); nothing measured")
        return 1
    rng = np.random.default_rng(args.seed)
    files = {lab: sorted((data / lab).glob("*.jpg")) for lab in LABELS}
    for fs in files.values():
        rng.shuffle(fs)
    counts = [int(c) for c in args.per_class.split(",")]
    top = max(counts)
    others = [(f, i) for i, lab in enumerate(LABELS) for f in files[lab][top:top + args.others]]
    shipped = Predictor(args.model)
    acc, far, frr = score(shipped, others)
    print(f"shipped head, {len(others)} held-out crops: accuracy {acc:.3f} FAR {far:.3f} FRR {frr:.3f} "
          f"(threshold {shipped.threshold:.4f})")
    work = Path(tempfile.mkdtemp(prefix="adapt-genki-"))
    try:
        for n in counts:
            labelled = work / f"labelled-{n}"
            for lab in LABELS:
                (labelled / lab).mkdir(parents=True)
                for f in files[lab][:n]:
                    shutil.copy(f, labelled / lab / f.name)
            started = time.perf_counter()
            record = adapt(AdaptConfig(model=Path(args.model), data=labelled, state=work / f"state-{n}", force=True),
                           log=lambda line: None)
            seconds = time.perf_counter() - started
            adapted = Predictor(args.model, version=versions.version_dir(work / f"state-{n}", record["id"]))
            acc, far, frr = score(adapted, others)
            cv = record["cv"]
            print(f"adapted on {n}/class ({seconds:.1f} s; CV {cv['accuracy']:.3f}, C {cv['C']:g}, "
                  f"{'prior' if cv['prior'] else 'plain'}): accuracy {acc:.3f} FAR {far:.3f} FRR {frr:.3f} "
                  f"(threshold {adapted.threshold:.4f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
