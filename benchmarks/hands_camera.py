"""A stand-in for another camera in the hands benchmark: the test photos turned and mirrored.

People in front of another camera hold their hands at other angles, and a selfie camera mirrors them. Without
that camera's photos, :func:`camera_sets` makes its stand-in from the seeded test split: each photo turned in
the image plane by an angle drawn uniformly within +-``max_degrees`` (the corners the turn uncovers filled
with the photo's median border colour, then resized back to the photo's size), mirrored left-right, and both.

:func:`camera_table` scores hand-feature heads on those sets, all fitted the same way (the cross-validated
logistic regression of ``toolkit finetune hands`` on train+val of sign_digits):

- ``as seen, points``: the 63 numbers of feature version hands-2 (relative to the wrist, scaled, left hands
  mirrored; not turned) = today's ``--keep-orientation``;
- ``upright, points`` and ``upright, points+angles``: each set alone;
- ``upright, cv choice``: what ``toolkit finetune hands`` fits by default (the cv picks the set and C).

Then the few-shot table: a head fitted on ``n`` photos of the stand-in camera alone (turned + mirrored test
photos, stratified, C 1 as the issue measured) and scored on the rest of them, over ``repeats`` draws.
An image where no hand is found is a wrong answer everywhere.
"""

from __future__ import annotations

import numpy as np

ROWS = (("as seen, points (hands-2)", "kept", ("points",)), ("upright, points", "upright", ("points",)),
        ("upright, points+angles", "upright", ("points+angles",)),
        ("upright, cv choice (the default)", "upright", ("points", "points+angles")))
SETS = ("clean", "turned", "mirrored", "turned+mirrored")
FEW_SHOT_ROWS = (("as seen, points (hands-2)", "kept", "points"), ("upright, points", "upright", "points"),
                 ("upright, points+angles", "upright", "points+angles"))


def turn(image: np.ndarray, degrees: float, mirror: bool) -> np.ndarray:
    """``image`` turned by ``degrees`` (counter-clockwise) about its centre, whole, then resized back; mirrored."""
    from PIL import Image

    h, w = image.shape[:2]
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    fill = tuple(int(v) for v in np.median(border, axis=0))
    img = Image.fromarray(image).rotate(degrees, resample=Image.BILINEAR, expand=True, fillcolor=fill)
    out = np.asarray(img.resize((w, h), Image.BILINEAR))
    return out[:, ::-1].copy() if mirror else out


def camera_sets(x: np.ndarray, seed: int, max_degrees: float = 45.0) -> dict[str, np.ndarray]:
    """{clean, turned, mirrored, turned+mirrored} copies of the images ``x`` (N, H, W, 3) uint8."""
    angles = np.random.default_rng(seed).uniform(-max_degrees, max_degrees, len(x))
    x = np.asarray(x, np.uint8)
    return {"clean": x, "turned": np.stack([turn(im, a, False) for im, a in zip(x, angles, strict=True)]),
            "mirrored": x[:, :, ::-1].copy(),
            "turned+mirrored": np.stack([turn(im, a, True) for im, a in zip(x, angles, strict=True)])}


def _features(tracker, split, key_base: str, min_side: int, zoom_out: float, orientation: str, turns: tuple):
    from toolkit.train.hands import landmark_features

    return landmark_features(tracker, split, key_base=key_base, min_side=min_side, zoom_out=zoom_out,
                             orientation=orientation, turns=turns)


def _score(fit, x: np.ndarray, found: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy over all images, an image without a hand wrong; accuracy over the images with a hand)."""
    pred = np.full(len(y), -1)
    if found.any():
        pred[found] = fit.model.classes_[fit.predict_proba(x[found]).argmax(1)]
    right = pred == y
    return float(np.mean(right)), float(np.mean(right[found])) if found.any() else 0.0


def camera_table(splits, *, min_side: int, zoom_out: float, seed: int = 0, max_degrees: float = 45.0,
                 few_shot: tuple = (30, 80), repeats: int = 3, folds: int = 5, turns: tuple = ()) -> dict:
    """Fit each row's head on train+val, score it on the test photos as seen by the stand-in camera; few-shot.

    ``turns``: the palm detector's turned looks when the plain and zoomed-out ones find no hand (as the run had).
    """
    from toolkit.data.split import Split
    from toolkit.inference.handfeatures import SETS as DIMS
    from toolkit.inference.handpipe import open_tracker
    from toolkit.models.hands import ensure_hand_models
    from toolkit.train.cvhead import cross_validate, fit_head, one_blas_thread
    from toolkit.train.hands import HEAD_EPS, models_key

    models = ensure_hand_models()
    tracker, key_base = open_tracker(models.palm, models.landmark), models_key(models)
    test = splits.test
    images = camera_sets(test.numpy()[0], seed, max_degrees)
    tests = {name: test if name == "clean" else Split(f"test-{name}", test.labels, test.y, test.image_size,
                                                      x=images[name], groups=test.groups) for name in SETS}
    fitting = [s for s in (splits.train, splits.val) if len(s)]
    out: dict = {"n_test": len(test), "max_degrees": max_degrees, "turns": list(turns), "rows": [], "no_hand": {},
                 "few_shot": []}
    feats: dict = {}
    for orientation in ("kept", "upright"):
        parts = [_features(tracker, s, key_base, min_side, zoom_out, orientation, turns) for s in fitting]
        found = np.concatenate([p.found for p in parts])
        feats[orientation] = {
            "x": np.concatenate([p.x for p in parts])[found], "y": np.concatenate([p.y for p in parts])[found],
            "groups": np.concatenate([s.groups for s in fitting])[found],
            "tests": {name: _features(tracker, s, key_base, min_side, zoom_out, orientation, turns)
                      for name, s in tests.items()}}
        out["no_hand"][orientation] = {name: int((~f.found).sum()) for name, f in feats[orientation]["tests"].items()}
    for label, orientation, sets in ROWS:
        d = feats[orientation]
        result = cross_validate({s: d["x"][:, :DIMS[s]] for s in sets}, d["y"], d["groups"], folds=folds, seed=seed,
                                eps=HEAD_EPS)
        dim = DIMS[result.layer]
        with one_blas_thread():
            fit = fit_head(d["x"][:, :dim], d["y"], result.c, HEAD_EPS, seed)
        acc = {name: _score(fit, f.x[:, :dim], f.found, f.y) for name, f in d["tests"].items()}
        out["rows"].append({"features": label, "set": result.layer, "C": result.c,
                            "cv_accuracy": float(np.mean(result.accuracies)),
                            **{name: a[0] for name, a in acc.items()},
                            "found_only": {name: a[1] for name, a in acc.items()}})
    for label, orientation, set_ in FEW_SHOT_ROWS:
        f = feats[orientation]["tests"]["turned+mirrored"]
        for n in (n for n in few_shot if n <= len(f.y) // 2):  # at least as many held out as fitted on
            accs = np.array([_few_shot(f.x[:, :DIMS[set_]], f.y, f.found, n, seed + r) for r in range(repeats)])
            out["few_shot"].append({"features": label, "n": n, "held_out": len(f.y) - n, "repeats": repeats,
                                    "accuracy": float(accs[:, 0].mean()), "min": float(accs[:, 0].min()),
                                    "accuracy_found": float(accs[:, 1].mean())})
    return out


def _few_shot(x: np.ndarray, y: np.ndarray, found: np.ndarray, n: int, seed: int, c: float = 1.0) -> tuple:
    """A head fitted on ``n`` stratified photos (drawn among all, found or not) and scored on the others."""
    from sklearn.model_selection import train_test_split

    from toolkit.train.cvhead import fit_head, one_blas_thread
    from toolkit.train.hands import HEAD_EPS

    idx = np.arange(len(y))
    train, held = train_test_split(idx, train_size=n, stratify=y, random_state=seed)
    train = train[found[train]]  # a photo without a hand cannot teach the head
    with one_blas_thread():
        fit = fit_head(x[train], y[train], c, HEAD_EPS, seed)
    return _score(fit, x[held], found[held], y[held])


def format_camera(k: int, res: dict) -> str:
    """The stand-in camera's table and its few-shot table, as markdown."""
    looks = ", ".join(f"{d:g}" for d in res.get("turns", [])) or "none"
    lines = [f"Stand-in for another camera (classes 0-{k - 1}, {res['n_test']} test photos; turned uniformly within "
             f"+-{res['max_degrees']:g} degrees, mirrored; no hand = wrong; palm detector's turned looks: {looks}):",
             "",
             "| features -> cv logistic regression | set, C chosen | cv acc | " + " | ".join(SETS) + " |",
             "|---|---|---:|" + "---:|" * len(SETS)]
    for r in res["rows"]:
        lines.append(f"| {r['features']} | {r['set']}, {r['C']:g} | {100 * r['cv_accuracy']:.1f} % | "
                     + " | ".join(f"{100 * r[s]:.1f} % ({100 * r['found_only'][s]:.1f} %)" for s in SETS) + " |")
    lines.append("(in brackets: accuracy over the photos where a hand was found)")
    nh = res["no_hand"]
    lines.append("no hand found (test photos), " + "; ".join(
        f"{o}: " + ", ".join(f"{s} {nh[o][s]}" for s in SETS) for o in nh))
    lines += ["", "Few-shot on the stand-in camera's own photos (turned + mirrored test photos; a head fitted on n of "
              "them, C 1, scored on the rest; mean (min) over draws):", "",
              "| features | n | held out | accuracy (min) | accuracy where a hand was found |",
              "|---|---:|---:|---:|---:|"]
    for r in res["few_shot"]:
        lines.append(f"| {r['features']} | {r['n']} | {r['held_out']} | {100 * r['accuracy']:.1f} % "
                     f"({100 * r['min']:.1f} %, {r['repeats']} draws) | {100 * r['accuracy_found']:.1f} % |")
    return "\n".join(lines)
