"""An export on face_shift's test sets as the door runs it: a pixel export (exported/happy) through its crop, a
face-landmark export (exported/happy-face) through its own chain.

    python -m benchmarks.face_baseline --model exported/happy [--test 500] [--genki-n 1000] [--fresh]

The same held-out smiles photos as ``benchmarks.face_shift`` (clean and through the door transform) and the same
GENKI photos, each run as the door runs a pixel export: the export's BlazeFace crop (when its manifest names
one), then ``Predictor.predict``; no face found scores 0. AUC [95 %], accuracy, FAR/FRR at its threshold.
``--fresh``: also the sets ``benchmarks.face_variants --fresh`` keeps for confirmation (no recipe was chosen on
them): 500 other smiles photos through the door transform (less those of ``--exclude``, the export's own photo
pool) and the GENKI photos not in ``--genki-n``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import cli
from benchmarks import face_data as D
from benchmarks.face_shift import auc, auc_interval, rates


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("face_baseline", __doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="/work/shared/datasets/smiles")
    p.add_argument("--genki", default="/work/shared/datasets/genki")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--genki-n", type=int, default=1000)
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--exclude", default="", help="a data spec whose photos the fresh smiles set leaves out (e.g. "
                   "the export's training pool: /work/shared/datasets/smiles?n=2000&seed=1)")
    args = p.parse_args(argv)
    from toolkit.inference.predictor import Predictor
    from toolkit.runtime.camera import make_cropper

    pred = Predictor(args.model)
    crop = make_cropper(None, args.model)
    files, labels = D.list_photos(Path(args.data))
    tr = D.pick(labels, args.train, 1)
    te = D.pick(labels, args.test, 2, exclude=tr)
    sets = {"smiles clean": ([files[i] for i in te], labels[te], "clean"),
            "smiles door (never trained)": ([files[i] for i in te], labels[te], "door")}
    if args.fresh:
        fresh = D.pick(labels, args.test, 4, exclude=np.concatenate([tr, te]))
        if args.exclude:
            from toolkit.data import load_data

            pool = {str(Path(args.data) / n) for n in load_data(args.exclude, (64, 64)).split(
                seed=0, val=0.0, test=0.0).train.names}
            fresh = np.array([i for i in fresh if str(files[i]) not in pool])
        sets[f"fresh: smiles door ({len(fresh)})"] = ([files[i] for i in fresh], labels[fresh], "door")
    if Path(args.genki).is_dir():
        gfiles, glabels = D.list_photos(Path(args.genki))
        keep = D.pick(glabels, args.genki_n, 3)
        sets["genki (other camera)"] = ([gfiles[i] for i in keep], glabels[keep], "clean")
        if args.fresh:
            rest = np.setdiff1d(np.arange(len(gfiles)), keep)
            sets[f"fresh: genki ({len(rest)})"] = ([gfiles[i] for i in rest], glabels[rest], "clean")
    print(f"{args.model} ({pred.file}, threshold {pred.threshold:.3f}, crop: {getattr(crop, 'name', 'none')})")
    print("| test | AUC [95 %] | acc % | FAR % | FRR % | faces % |\n|---|---|---|---|---|---|")
    for name, (paths, y, variant) in sets.items():
        scores, found = [], []
        for f in paths:
            image = D.variant_image(D.load(f), variant, 0)
            face = crop(image) if crop is not None else image
            got = pred.predict(face) if face is not None else None
            ok = got is not None and got.label not in ("no_face", "no_hand")  # a landmark export finds its own face
            found.append(ok)
            scores.append(got.probability if ok else 0.0)
        s, y = np.array(scores), np.asarray(y)
        lo, hi = auc_interval(s, y)
        r = rates(s, y, pred.threshold)
        print(f"| {name} | {auc(s, y):.3f} [{lo:.3f}-{hi:.3f}] | {100 * r['acc']:.1f} | {100 * r['far']:.1f} | "
              f"{100 * r['frr']:.1f} | {100 * np.mean(found):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main)
