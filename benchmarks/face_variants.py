"""Landmark-head recipes on face_shift's cached features: yaw, point subsets, the C grid, copies, threshold rule.

    python -m benchmarks.face_variants [--variants all] [--train 1000] [--test 500] [--genki-n 1000]

Reads the features ``benchmarks.face_shift`` cached (run it first: the extraction is the slow part; here only
heads are fitted). Every recipe is a standardiser + L2 logistic regression, C by grouped 3-fold CV on the
training photos and their copies (copies grouped with their photo), threshold where the out-of-fold scores of
the rows named by the threshold rule reach ``--target-far``. Tests, none of them used for fitting or for the
threshold: held-out ``smiles`` photos clean and through the door transform (``door``: colour grade + ~25 px
face + 640x480 frame), ``loo: lowres`` (trained without the lowres copies, tested through lowres) and GENKI-4K
(other people and cameras). A photo without a face scores 0 (never opens). "AUC found" is the AUC over the
photos with a face: ranking alone, without the detector's misses.

Recipes change only the landmark block, as numpy on the cached 468 x (x, y, z) points (already centred on the
nose tip, roll-levelled and scaled by the outer-eye distance): ``yaw`` also turns the points about the vertical
axis so the outer eye corners have the same depth (then rescales); subsets keep only some points.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks import cli
from benchmarks import face_data as D
from benchmarks.face_shift import KINDS, auc, auc_interval, rates, threshold_at_far

# MediaPipe face-mesh point indices (the mesh's published topology): lips, eyes, eyebrows.
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 78, 95, 88, 178,
        87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)
EYES = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
        33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
BROWS = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336, 46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
EYE_CORNERS = (33, 263)
CS = (1e-3, 1e-2, 1e-1)


def yaw_levelled(x: np.ndarray) -> np.ndarray:
    """(N, 1404) roll-levelled points -> the same turned about the vertical axis so the outer eye corners have
    equal depth, rescaled so they are 1 apart again."""
    p = x.reshape(len(x), 468, 3).astype(np.float64)
    d = p[:, EYE_CORNERS[1]] - p[:, EYE_CORNERS[0]]
    norm = np.hypot(d[:, 0], d[:, 2])
    norm = np.where(norm > 1e-6, norm, 1.0)
    c, s = (d[:, 0] / norm)[:, None], (d[:, 2] / norm)[:, None]
    xs, zs = p[..., 0], p[..., 2]
    out = np.stack([c * xs + s * zs, p[..., 1], -s * xs + c * zs], axis=-1) / norm[:, None, None]
    return out.reshape(len(x), -1).astype(np.float32)


def subset(x: np.ndarray, points: tuple, dims: tuple = (0, 1, 2)) -> np.ndarray:
    p = x.reshape(len(x), 468, 3)
    return np.ascontiguousarray(p[:, list(points)][..., list(dims)].reshape(len(x), -1))


VARIANTS = {
    "landmarks": lambda x: x,
    "fused": None,  # expression + landmarks (see block_of)
    "fused yaw": None,
    "landmarks yaw": yaw_levelled,
    "landmarks xy": lambda x: subset(x, tuple(range(468)), (0, 1)),
    "lips": lambda x: subset(x, LIPS),
    "lips+eyes": lambda x: subset(x, LIPS + EYES),
    "lips+eyes+brows": lambda x: subset(x, LIPS + EYES + BROWS),
    "lips+eyes yaw": lambda x: subset(yaw_levelled(x), LIPS + EYES),
}


def block_of(name: str):
    """The feature function of a recipe: a landmark variant, or ``fused``: expression and landmarks side by side."""
    if name.startswith("fused"):
        marks = VARIANTS[name.replace("fused", "landmarks", 1)]
        return lambda s: np.concatenate([s["expression"], marks(s["landmarks"])], axis=1)
    return lambda s, fn=VARIANTS[name]: fn(s["landmarks"])


def rows(sets: list[tuple[str, dict]], y: np.ndarray, block):
    """(x, y, group, variant name per row) over the found faces of each (variant, features) set."""
    xs, ys, gs, vs = [], [], [], []
    for name, s in sets:
        m = s["found"]
        xs.append(block(s)[m])
        ys.append(y[m])
        gs.append(np.arange(len(y))[m])
        vs += [name] * int(m.sum())
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), np.array(vs)


class Recipe:
    """A fitted head: C by grouped CV (or fixed), thresholds from out-of-fold scores by several rules."""

    def __init__(self, block, train: dict, y: np.ndarray, kinds: tuple, cs: tuple, far: float, eps: float):
        from toolkit.train.cvhead import cross_validate, fit_head, one_blas_thread

        self.block = block
        x, ys, g, v = rows([("clean", train["clean"])] + [(k, train[k]) for k in kinds], y, block)
        res = cross_validate({"x": x}, ys, g, folds=3, cs=cs, eps=eps)
        self.c, self.cv = res.c, float(np.mean(res.accuracies))
        oof = res.oof[:, 1]
        deg = v != "clean"
        self.t = {"degraded": threshold_at_far(oof[deg], ys[deg], far) if deg.any() else float("nan"),
                  "clean": threshold_at_far(oof[~deg], ys[~deg], far)}
        if "lowres" in kinds:
            low = v == "lowres"
            self.t["lowres"] = threshold_at_far(oof[low], ys[low], far)
        with one_blas_thread():
            self.fit = fit_head(x, ys, self.c, eps)

    def score(self, s: dict) -> np.ndarray:
        out = np.zeros(len(s["found"]))
        if s["found"].any():
            out[s["found"]] = self.fit.predict_proba(self.block(s)[s["found"]])[:, 1]
        return out


def line(name: str, test: str, r: Recipe, s: dict, y: np.ndarray, rule: str, more: tuple = ()) -> str:
    p = r.score(s)
    lo, hi = auc_interval(p, y)
    m = s["found"]
    x = rates(p, y, r.t[rule])
    f = lambda v, ci: f"{100 * v:.1f} [{100 * ci[0]:.1f}-{100 * ci[1]:.1f}]"  # noqa: E731
    extra = "".join(f" {f(z['far'], z['far95'])} / {f(z['frr'], z['frr95'])} |"
                    for z in (rates(p, y, r.t[k]) for k in more))
    return (f"| {name} | {test} | {auc(p, y):.3f} [{lo:.3f}-{hi:.3f}] | {auc(p[m], y[m]):.3f} | "
            f"{f(x['far'], x['far95'])} | {f(x['frr'], x['frr95'])} |{extra}")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("face_variants", __doc__)
    p.add_argument("--data", default="/work/shared/datasets/smiles")
    p.add_argument("--genki", default="/work/shared/datasets/genki")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--genki-n", type=int, default=1000)
    p.add_argument("--target-far", type=float, default=0.05)
    p.add_argument("--cache", default=str(Path.home() / ".cache/toolkit/face_shift"))
    p.add_argument("--variants", default="all", help="comma-separated names of VARIANTS, or 'all'")
    p.add_argument("--extra", action="store_true", help="also: no copies, C grids, eps, threshold rules, fused")
    p.add_argument("--fresh", action="store_true", help="also the sets no recipe was chosen on: 500 other smiles "
                   "photos through the door transform, and the GENKI photos not in --genki-n")
    p.add_argument("--cs", default="0.001,0.01,0.1", help="the C grid")
    args = p.parse_args(argv)
    start = time.time()
    files, labels = D.list_photos(Path(args.data))
    tr = D.pick(labels, args.train, 1)
    te = D.pick(labels, args.test, 2, exclude=tr)
    get = lambda idx, v, **k: D.features([files[i] for i in idx], v, Path(args.cache), **k)  # noqa: E731
    train = {v: get(tr, v) for v in ("clean", *KINDS)}
    test = {v: get(te, v) for v in ("clean", "door", "lowres")}
    gfiles, glabels = D.list_photos(Path(args.genki))
    keep = D.pick(glabels, args.genki_n, 3)
    genki = D.features([gfiles[i] for i in keep], "clean", Path(args.cache))
    ytr, yte, yg = labels[tr], labels[te], glabels[keep]
    sets = [("smiles clean", test["clean"], yte), ("smiles door", test["door"], yte), ("GENKI", genki, yg)]
    if args.fresh:
        fresh = D.pick(labels, args.test, 4, exclude=np.concatenate([tr, te]))
        rest = np.setdiff1d(np.arange(len(gfiles)), keep)
        sets += [("fresh: smiles door (500 others)", get(fresh, "door"), labels[fresh]),
                 (f"fresh: GENKI ({len(rest)} others)", D.features([gfiles[i] for i in rest], "clean",
                                                                  Path(args.cache)), glabels[rest])]
    cs_grid = tuple(float(v) for v in args.cs.split(","))
    names = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",")]
    print("| recipe | test | AUC [95 %] | AUC found | FAR % [95 %] | FRR % [95 %] | lowres-OOF t: FAR / FRR % |\n"
          "|---|---|---|---|---|---|---|")

    def report(name, make, kinds=KINDS, cs=cs_grid, rule="degraded", eps=1e-3, loo=True):
        r = make(kinds, cs, eps)
        more = ("lowres",) if rule == "degraded" and "lowres" in r.t else ()
        print(f"| **{name}** (C {r.c:g}, CV acc {100 * r.cv:.1f} %, t {r.t[rule]:.3f} by {rule} OOF"
              + (f", {r.t['lowres']:.3f} by lowres OOF" if more else "") + ") | | | | | | |")
        for t, s, y in sets:
            print(line("", t, r, s, y, rule, more))
        if loo and "lowres" in kinds:
            r2 = make(tuple(k for k in kinds if k != "lowres"), (r.c,), eps)
            print(line("", "loo: lowres", r2, test["lowres"], yte, "degraded"))
        print(f"[{time.time() - start:.0f} s]", flush=True)
        return r

    for name in names:
        block = block_of(name)
        report(name, lambda k, cs, eps, b=block: Recipe(b, train, ytr, k, cs, args.target_far, eps))
    if args.extra:
        fn = VARIANTS[names[0]]
        block = lambda s: fn(s["landmarks"])  # noqa: E731
        make = lambda k, cs, eps: Recipe(block, train, ytr, k, cs, args.target_far, eps)  # noqa: E731
        report(f"{names[0]}, no copies (clean OOF threshold)", make, kinds=(), rule="clean", loo=False)
        report(f"{names[0]}, C 0.01 fixed", make, cs=(0.01,))
        report(f"{names[0]}, C grid 1e-4..1", make, cs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 1.0))
        report(f"{names[0]}, eps 1e-6", make, eps=1e-6)
        report(f"{names[0]}, clean-OOF threshold", make, rule="clean", loo=False)
        report(f"{names[0]}, lowres-OOF threshold", make, rule="lowres", loo=False)
        fused = lambda s: np.concatenate([s["expression"], fn(s["landmarks"])], axis=1)  # noqa: E731
        report(f"fused ({names[0]})", lambda k, cs, eps: Recipe(fused, train, ytr, k, cs, args.target_far, eps))
    return 0


if __name__ == "__main__":
    cli.run(main)
