"""``toolkit door adapt``: refit an export's head on owner-labelled photos, on the Pi, without TensorFlow.

The export must be a chain of frozen files ending in a linear head (a hand-sign export; a ``features`` export,
base.onnx + head.onnx): the photos go through the export's own frozen files (onnxruntime + numpy), and an L2
logistic regression (:mod:`toolkit.inference.logreg`, scikit-learn's objective in numpy) is cross-validated over
C, plain and pulled toward the shipped head's coefficients, like ``--head cv``. The threshold is chosen on the
out-of-fold scores at the manifest's target false-accept rate. The result is a new version in the door's state
folder (:mod:`toolkit.inference.versions`); the door switches to it between two frames.

Guard rails (one line each): fewer than 10 labelled photos of a class, one class over 90 % of them, and a CV
estimate below the current head's accuracy on the same photos refuse unless ``force``; an out-of-fold FAR above
the target is recorded with its honest upper bound (a few dozen negatives cannot prove 1 %), not refused.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.images import IMAGE_SUFFIXES
from toolkit.inference import logreg, versions
from toolkit.inference.facepipe import NO_FACE
from toolkit.inference.handpipe import NO_HAND
from toolkit.metrics import far_frr, wilson_interval

MIN_PER_CLASS = 10
MAX_SHARE = 0.90
DEFAULT_TARGET_FAR = 0.01  # when the manifest names none


@dataclass(frozen=True)
class AdaptConfig:
    model: Path  # the export folder (read-only under systemd)
    data: Path  # a folder with a subfolder per label, e.g. the page's labelled/
    state: Path  # the door's state folder, where versions go
    force: bool = False  # adapt despite the refusing guard rails
    prior: str = "auto"  # "auto": CV chooses plain or pulled toward the shipped head; "yes"; "no"
    folds: int = 5
    k: int = 3  # the door's k-of-n, for the per-visit FAR bound
    n: int = 5
    switch: bool = True  # make the new version the serving one
    seed: int = 0
    niceness: int = 10  # the fit runs this much nicer than the door (Linux)
    dry_run: bool = False  # the page's estimate before "Adapt": the CV figures, no version written
    file: str | None = None  # the door's --file (a features export's base variant): features as the door sees them


def labelled_files(data: Path, labels: tuple[str, ...]) -> tuple[list[Path], list[int], dict]:
    """Image files under ``data/<label>/`` (regular files only: symlinks are not followed) and their label index.

    A ``no_hand`` or ``no_face`` folder is skipped (photos without a hand or face are not training data), as
    are dot files.

    Raises:
        ToolkitError: no such folder, a subfolder that is not one of the model's labels, or no photos.
    """
    data = Path(data)
    if not data.is_dir():
        raise ToolkitError(f"--data {data}: no such folder; point it at a folder with a subfolder per label "
                           f"({', '.join(labels)})")
    files, ys, skipped = [], [], {}
    for sub in sorted(p for p in data.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")):
        if sub.name in (NO_HAND, NO_FACE):
            skipped[sub.name] = sum(1 for _ in sub.iterdir())
            continue
        if sub.name not in labels:
            raise ToolkitError(f"--data {sub}: {sub.name!r} is not a label of the model ({', '.join(labels)}); "
                               "rename or remove that folder")
        for f in sorted(sub.iterdir()):
            if f.is_file() and not f.is_symlink() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                ys.append(labels.index(sub.name))
    if not files:
        raise ToolkitError(f"--data {data}: no labelled photos (.jpg .png ...) in its label folders")
    return files, ys, skipped


def compute_features(predictor, files: list[Path], log: Callable[[str], None],
                     cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(features of the photos with features (F, D), mask of those photos (N,)): through the export's own files.

    ``cache``: an .npz of earlier photos' features by content sha256 (only the frozen files make them, so an adapt
    after labelling ten more photos computes ten); rewritten with this run's photos only (deleted photos leave it).
    """
    import hashlib

    from toolkit.images import decode_image

    known: dict[str, np.ndarray | None] = {}
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                known = {k: (row if ok else None) for k, row, ok in zip(z["keys"], z["x"], z["found"], strict=True)}
        except (OSError, ValueError, KeyError):
            known = {}  # a damaged cache is only lost time
    keys, rows, found, computed = [], [], np.zeros(len(files), bool), 0
    for i, f in enumerate(files):
        data = f.read_bytes()
        key = hashlib.sha256(data).hexdigest()
        keys.append(key)
        if key in known:
            x = known[key]
        else:
            x = predictor.features(decode_image(data, None, max_pixels=predictor.max_pixels, name=str(f)))
            known[key] = None if x is None else np.asarray(x, np.float32).reshape(-1)
            computed += 1
        if known[key] is not None:
            rows.append(known[key])
            found[i] = True
    log(f"features of {computed} new photos ({len(files) - computed} from the cache)" if cache is not None
        else f"features of {computed} photos")
    if (~found).any():
        log(f"note: no hand found in {int((~found).sum())} of {len(files)} photos; they are not training data")
    if not rows:
        raise ToolkitError("no labelled photo gave features (no hand in any); label photos with a hand in view")
    if cache is not None:
        dim = rows[0].shape[0]
        x_all = np.stack([known[k] if known[k] is not None else np.zeros(dim, np.float32) for k in keys])
        tmp = cache.with_name(f".{cache.name}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(keys), x=x_all, found=np.array([known[k] is not None for k in keys]))
        tmp.replace(cache)
    return np.stack(rows), found


def choose_threshold(p_pos: np.ndarray, positive: np.ndarray, target_far: float) -> dict:
    """The lowest threshold whose out-of-fold FAR is <= target (the export's rule), with honest upper bounds."""
    p_pos, positive = np.asarray(p_pos, np.float64), np.asarray(positive, bool)
    neg = np.sort(p_pos[~positive])[::-1]
    if not len(neg):
        return {"threshold": None, "far": None, "frr": None, "negatives": 0, "positives": int(positive.sum())}
    k = int(math.floor(target_far * len(neg) + 1e-9))
    t = 0.0 if k >= len(neg) else float(np.nextafter(neg[k], np.inf))
    t = min(max(t, 0.0), 1.0)
    far, frr = far_frr(p_pos, positive, t)
    accepted = round(far * len(neg))
    return {"threshold": t, "far": far, "frr": frr, "negatives": int(len(neg)), "positives": int(positive.sum()),
            "far_upper_95": round(binomial_upper(accepted, len(neg)), 6),
            "far_95": wilson_interval(accepted, len(neg)),
            "frr_95": wilson_interval(round(frr * int(positive.sum())), int(positive.sum()))}


def binomial_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen k times in n (0 in 30: 0.095; the rule of three)."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):  # bisection on P(X <= k | p) = 1 - confidence
        mid = (lo + hi) / 2
        cdf = sum(math.comb(n, i) * mid**i * (1 - mid) ** (n - i) for i in range(k + 1))
        lo, hi = (mid, hi) if cdf > 1 - confidence else (lo, mid)
    return hi


def visit_bound(frame_far: float, k: int, n: int) -> dict:
    """Per-visit FAR under k-of-n for a per-frame rate (here the upper bound): independent and identical frames."""
    from toolkit.runtime.core.policy import visit_far

    return visit_far(frame_far, k, n)


def adapt(config: AdaptConfig, log: Callable[[str], None] = print, *, predictor=None) -> dict:
    """Fit a new head version on ``config.data`` and (by default) make it the door's; returns its record.

    Args:
        config: what to adapt and where the versions go.
        log: one line per step.
        predictor: the export's :class:`~toolkit.inference.predictor.Predictor` (the door's, to share its
            sessions); None opens ``config.model``.

    Raises:
        ToolkitError: an export that cannot be adapted, bad data, a refusing guard rail, an unwritable state.
    """
    from toolkit.inference.predictor import Predictor, cannot_adapt

    started = time.perf_counter()
    _lower_priority(config.niceness)
    versions.check_writable(config.state)  # before minutes of features: say it now
    parent = predictor or Predictor(config.model, config.file)
    if not parent.is_chain:
        raise ToolkitError(f"{config.model}: {cannot_adapt(parent.manifest)}")
    labels = tuple(parent.labels)
    files, ys, skipped = labelled_files(config.data, labels)
    chain_id = parent.manifest.files[parent.file].sha256[:16]  # features depend on the frozen files only, but a
    # re-export may change them: one cache per export head (and per base variant of a features export)
    if getattr(parent, "base_file", None) in parent.manifest.files:
        chain_id += "-" + parent.manifest.files[parent.base_file].sha256[:8]
    x, found = compute_features(parent, files, log, versions.adapt_root(config.state) / f"features-{chain_id}.npz")
    y = np.asarray(ys, np.int64)[found]
    counts = {lab: int(np.sum(y == i)) for i, lab in enumerate(labels)}
    log(f"{len(y)} labelled photos with features: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f" ({time.perf_counter() - started:.1f} s)")
    _guard_counts(counts, config.force, log)
    entry = parent.manifest.files[parent.file]
    serving = _serving(config, parent, log)
    current_acc = float(np.mean(_class_probs(serving, x).argmax(1) == y))
    if serving.version is not None:  # fitted on (some of) these photos: its accuracy on them flatters it; the bar
        current_acc = min(current_acc, float(serving.version["cv"]["accuracy"]))  # is its own CV estimate then
    target = parent.manifest.target_far or DEFAULT_TARGET_FAR
    fitted = fit_head_on_features(x, y, labels, _head_of(parent, x.shape[1]), parent.manifest.output_kind, target,
                                  prior=config.prior, folds=config.folds, seed=config.seed, k=config.k, n=config.n,
                                  log=log, current_accuracy=current_acc, force=config.force or config.dry_run)
    cv, head, thresholds, interval = fitted["cv"], fitted["head"], fitted["thresholds"], fitted["interval"]
    binary = parent.manifest.output_kind == "sigmoid"
    main = thresholds.get(labels[1]) if binary else None
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parent": {"folder": str(Path(config.model).resolve()), "name": parent.name, "head": parent.file,
                   "sha256": entry.sha256, "version": serving_id(config)},
        "labels": list(labels), "output_kind": parent.manifest.output_kind, "counts": counts,
        "no_features": int((~found).sum()), "skipped": skipped,
        "cv": {"accuracy": cv.accuracy, "interval_95": interval, "folds": int(cv.fold.max()) + 1, "C": cv.c,
               "prior": cv.prior, "fold_accuracies": cv.accuracies, "grid": cv.grid, "n": int(len(y))},
        "current_accuracy": current_acc, "target_far": target,
        "threshold": main["threshold"] if main else None, "far": main["far"] if main else None,
        "frr": main["frr"] if main else None, "far_upper_95": main["far_upper_95"] if main else None,
        "thresholds": thresholds, "threshold_source": versions.THRESHOLD_SOURCE,
        "k": config.k, "n": config.n, "forced": bool(config.force), "seconds": None,
    }
    record["seconds"] = round(time.perf_counter() - started, 2)
    if config.dry_run:  # an estimate: what "Adapt" would fit on these photos, nothing written or switched
        log(f"estimate only, nothing written ({record['seconds']:.1f} s)")
        return {**record, "id": None, "dry_run": True}
    folder = versions.write_version(config.state, head, record)
    record = versions.read_version(folder)
    if config.switch:
        versions.choose(config.state, record["id"])
    log(f"wrote version {record['id']} in {folder} ({record['seconds']:.1f} s)"
        + ("; the door switches to it on its next frame" if config.switch else ""))
    for lab, t in thresholds.items():
        if t["threshold"] is not None:
            log(f"  {lab}: threshold {t['threshold']:.4f} (source: {versions.THRESHOLD_SOURCE}), out-of-fold FAR "
                f"{t['far']:.3f} (95 % upper bound {t['far_upper_95']:.3f} on {t['negatives']} negatives), FRR "
                f"{t['frr']:.3f}; per visit under {config.k} of {config.n}: <= {t['visit']['identical_frames']:.3f} "
                f"(identical frames), {t['visit']['independent_frames']:.2g} (independent)")
    return record


def fit_head_on_features(x: np.ndarray, y: np.ndarray, labels: tuple, prior_head, output_kind: str, target: float,
                         *, prior: str = "auto", folds: int = 5, seed: int = 0, k: int = 3, n: int = 5,
                         log: Callable[[str], None] = print, current_accuracy: float | None = None,
                         force: bool = True) -> dict:
    """Cross-validate and fit the head on features; choose each label's threshold on the out-of-fold scores.

    Returns {"cv", "head" (LinearHead on raw features), "thresholds" {label: figures}, "interval"}.

    Raises:
        ToolkitError: the CV estimate is below ``current_accuracy`` and not ``force``.
    """
    use = {"auto": (False, True), "yes": (True,), "no": (False,)}[prior]
    with _one_blas_thread():
        cv = logreg.cross_validate(x, y, len(labels), prior_head=prior_head, use_prior=use, folds=folds, seed=seed)
    interval = wilson_interval(int(np.sum(cv.oof.argmax(1) == y)), len(y))
    log(f"cross-validated accuracy {cv.accuracy:.3f} (95 % interval {interval[0]:.3f}-{interval[1]:.3f}, "
        f"{cv.fold.max() + 1} folds, C {cv.c:g}, {'pulled toward the shipped head' if cv.prior else 'plain'})"
        + ("" if current_accuracy is None else f"; the current head on the same photos: {current_accuracy:.3f}"))
    if current_accuracy is not None and cv.accuracy < current_accuracy and not force:
        raise ToolkitError(f"refused: the refitted head's CV accuracy {cv.accuracy:.3f} is below the current head's "
                           f"{current_accuracy:.3f} on the same {len(y)} photos; label more photos or pass --force")
    mean, var = x.mean(axis=0), x.var(axis=0)
    w0 = logreg.prior_coef(prior_head, mean, var) if cv.prior and prior_head is not None else None
    with _one_blas_thread():
        fit = logreg.fit_logreg(x, y, cv.c, len(labels), prior=w0, mean=mean, var=var)
    thresholds = {}
    for i, lab in enumerate(labels):
        if output_kind == "sigmoid" and i == 0:
            continue
        t = choose_threshold(cv.oof[:, i], y == i, target)
        if t["threshold"] is not None:
            t["visit"] = visit_bound(t["far_upper_95"], k, n)
            if t["far"] > target:
                log(f"note: out-of-fold FAR for {lab!r} is {t['far']:.3f} at the chosen threshold, above the target "
                    f"{target:g}; recorded with its upper bound {t['far_upper_95']:.3f}")
        thresholds[lab] = t
    return {"cv": cv, "head": logreg.LinearHead.from_fit(fit), "thresholds": thresholds, "interval": interval}


def serving_id(config: AdaptConfig) -> str | None:
    return versions.current(config.state)


def _serving(config: AdaptConfig, parent, log):
    """The head deciding now (the current version's, else the export's): the bar a new fit must clear."""
    vid = versions.current(config.state)
    if vid is None:
        return parent
    from toolkit.inference.predictor import Predictor

    try:
        return Predictor(config.model, config.file, version=versions.version_dir(config.state, vid))
    except ToolkitError as exc:
        log(f"note: the current version {vid} does not load ({exc}); comparing with the export's own head")
        return parent


def _class_probs(predictor, x: np.ndarray) -> np.ndarray:
    out = predictor.head(x)
    return np.concatenate([1 - out, out], axis=1) if out.shape[1] == 1 else out


def _head_of(predictor, dim: int, step: float = 0.01) -> logreg.LinearHead | None:
    """The export's head file as a LinearHead, read back by probing it (it is linear before its activation):
    its logits at 0 and at ``step`` along each feature. None when it saturates there (no prior then)."""
    probe = np.vstack([np.zeros((1, dim), np.float32), step * np.eye(dim, dtype=np.float32)])
    out = np.asarray(predictor._session.run([predictor.output_name], {"features": probe})[0], np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(out / (1 - out)) if out.shape[1] == 1 else np.log(out)
    if not np.all(np.isfinite(logits)):
        return None
    bias = logits[0]
    kernel = (logits[1:] - bias) / step
    if out.shape[1] > 1:  # a softmax's logits are known up to a constant per row: centre them
        kernel = kernel - kernel.mean(axis=1, keepdims=True)
        bias = bias - bias.mean()
    return logreg.LinearHead(kernel, bias)


def _guard_counts(counts: dict, force: bool, log) -> None:
    total = sum(counts.values())
    problems = [f"{lab!r} has {n} labelled photos with features, fewer than {MIN_PER_CLASS}"
                for lab, n in counts.items() if n < MIN_PER_CLASS]
    big = max(counts, key=counts.get)
    if total and counts[big] / total > MAX_SHARE:
        problems.append(f"{big!r} is {counts[big] / total:.0%} of the labelled photos (over {MAX_SHARE:.0%})")
    if not problems:
        return
    if not force:
        raise ToolkitError(f"refused: {problems[0]}; label more photos on the page or pass --force")
    for p in problems:
        log(f"warning (--force): {p}")
    if sum(1 for n in counts.values() if n >= 2) < 2:
        raise ToolkitError("refused even with --force: cross-validation needs 2 classes with at least 2 photos each")


def _lower_priority(niceness: int) -> None:
    """This thread (the page's adapt job) or process (the CLI) runs at ``niceness`` (absolute, never higher
    priority than it has): the door's decisions come first. Absolute, because the page's request threads are
    already niced and a thread started from one inherits theirs (relative, the fit would sink to 19 and starve)."""
    if niceness and hasattr(os, "setpriority"):
        try:
            tid = threading_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), min(19, niceness)))
        except OSError:
            pass


def threading_native_id() -> int:
    import threading

    return threading.get_native_id()


def _one_blas_thread():
    """BLAS on one thread (numpy's own pool would take the door's cores, at the priority of the thread that
    imported numpy): threadpoolctl when at hand (the full install), else OpenBLAS' own switch (the door install)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        _openblas_threads(1)  # process-wide and kept: the door's own numpy work is too small to need a pool
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _openblas_threads(n: int) -> bool:
    """Set the thread count of every OpenBLAS the process has loaded (numpy's wheels bundle one); True if any."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = {path for line in f if "openblas" in Path(path := line.split()[-1]).name.lower() and ".so" in path}
    except OSError:
        return False
    done = False
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(handle, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done = True
                break
    return done
