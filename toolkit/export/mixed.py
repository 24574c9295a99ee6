"""Mixed precision, format-independent: rank layers by what int8 costs them, search how many stay float.

A format plugs in two functions (:func:`toolkit.export.automix.plug`): ``sensitivity(ctx, images) ->
{Keras layer: error}`` (the output error against float when only that layer is quantized) and
``build(ctx, path, float_layers)`` (the int8 file with those Keras layers left in float). Everything here
is keyed by Keras layer names, so the ONNX and TFLite reports of one model line up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

SENSITIVITY_IMAGES = 32  # selection images each single-layer variant runs on: enough to rank, cheap per layer
RANKING_KEPT = 20  # layers of the ranking the manifest keeps
EXPLAIN_TOP = 10  # layers --explain prints


@dataclass(frozen=True)
class LayerScore:
    """One entry of a sensitivity report."""

    layer: str  # Keras layer name
    error: float  # mean over images of max |dp| against float when only this layer is quantized
    mac_share: float  # share of the model's multiply-accumulates this layer does (0..1)


@dataclass
class SearchResult:
    """What :func:`search` settled on: ``k`` top-ranked layers in float (None: even all of them failed)."""

    k: int | None
    runner: object = None
    tried: list = field(default_factory=list)  # (k, passed) in the order built


def macs(model) -> dict[str, int]:
    """Multiply-accumulates per image of every Conv2D, DepthwiseConv2D, SeparableConv2D and Dense layer.

    Nested models are walked; keys are the (unique) Keras layer names.
    """
    out: dict[str, int] = {}
    for layer in _leaves(model):
        kind = type(layer).__name__
        try:
            shape_in, shape_out = layer.input_shape, layer.output_shape
        except (AttributeError, RuntimeError):  # a layer never called (or shared): it has no fixed shape
            continue
        if not isinstance(shape_in, tuple) or not isinstance(shape_out, tuple):
            continue
        spatial = int(np.prod([d or 1 for d in shape_out[1:-1]])) if len(shape_out) > 2 else 1
        c_in, c_out = int(shape_in[-1] or 0), int(shape_out[-1] or 0)
        if kind == "Dense":
            out[layer.name] = spatial * c_in * c_out
        elif kind in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
            kh, kw = layer.kernel_size
            groups = int(getattr(layer, "groups", 1) or 1)
            if kind == "Conv2D":
                out[layer.name] = spatial * kh * kw * c_in // groups * c_out
            elif kind == "DepthwiseConv2D":
                out[layer.name] = spatial * kh * kw * c_out
            else:  # depthwise then pointwise
                mid = c_in * int(layer.depth_multiplier)
                out[layer.name] = spatial * (kh * kw * mid + mid * c_out)
    return out


def folded_into(model) -> dict[str, str]:
    """BatchNormalization layer name -> the MAC layer feeding it: converters fold the one into the other, and
    name the fused op after either (tf2onnx's fused conv outputs the BatchNormalization's tensor)."""
    names, out = set(macs(model)), {}
    for layer in _leaves(model):
        if type(layer).__name__ != "BatchNormalization" or not layer._inbound_nodes:
            continue
        inbound = layer._inbound_nodes[0].inbound_layers
        inbound = inbound[0] if isinstance(inbound, (list, tuple)) and len(inbound) == 1 else inbound
        if getattr(inbound, "name", None) in names:
            out[layer.name] = inbound.name
    return out


def _leaves(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and getattr(layer, "_is_graph_network", False):
            yield from _leaves(layer)
        else:
            yield layer


def rank(errors: dict[str, float], layer_macs: dict[str, int]) -> list[LayerScore]:
    """The sensitivity report: every layer of ``errors``, worst first (ties: more MACs first, then by name)."""
    total = float(sum(layer_macs.values())) or 1.0
    scores = [LayerScore(name, float(err), layer_macs.get(name, 0) / total) for name, err in errors.items()]
    return sorted(scores, key=lambda s: (-s.error, -s.mac_share, s.layer))


def search(ranking: Sequence[LayerScore], build: Callable, accept: Callable, low: int = 1) -> SearchResult:
    """The smallest k in [low, len(ranking)] whose file (top k layers in float) passes ``accept``.

    Galloping then bisection, assuming more float layers never hurt: k = low, 2 low, 4 low ... until one
    passes, then halving the last gap. At most 2 log2(n) + 1 calls of ``build(layers) -> runner``, not one
    re-quantization per layer, and a single build when the worst layer alone is the culprit (the usual case).
    ``low`` is 1 when the plain int8 file (k = 0) already failed.
    """
    n = len(ranking)
    tried, runners = [], {}

    def passes(k: int) -> bool:
        runner = build(tuple(s.layer for s in ranking[:k]))
        ok = bool(accept(runner))
        tried.append((k, ok))
        if ok:
            runners[k] = runner
        return ok

    failed, k = max(0, low) - 1, max(0, low)
    while True:  # invariant: every k' <= failed fails
        if k > n:
            return SearchResult(None, None, tried)
        if passes(k):
            break
        failed, k = k, (n if k == n else min(n, max(1, 2 * k)))
        if failed == n:
            return SearchResult(None, None, tried)
    lo, hi = failed + 1, k
    while lo < hi:  # invariant: hi passes, everything below lo fails
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return SearchResult(hi, runners[hi], tried)


def paired_drop(float_pred: np.ndarray, quant_pred: np.ndarray, y: np.ndarray, z: float = 1.96) -> dict:
    """Accuracy drop (float - quantized, points) on the same images, with Newcombe's paired 95 % interval.

    Newcombe (1998, paired data, method 10): Wilson intervals of both accuracies, combined with the correlation
    of the paired outcomes, so images both models get right (or wrong) do not widen it. The interval always holds
    the point estimate.
    """
    f_ok = np.asarray(float_pred).reshape(-1) == np.asarray(y).reshape(-1)
    q_ok = np.asarray(quant_pred).reshape(-1) == np.asarray(y).reshape(-1)
    n = len(f_ok)
    if n == 0:
        return {"drop": 0.0, "drop_95": None, "broken": 0, "fixed": 0}
    a, b = int(np.sum(f_ok & q_ok)), int(np.sum(f_ok & ~q_ok))
    c, d = int(np.sum(~f_ok & q_ok)), int(np.sum(~f_ok & ~q_ok))
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson(a + b, n, z)
    l2, u2 = _wilson(a + c, n, z)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    # Newcombe's continuity-corrected correlation: without it no discordant pair at all gives a zero-width interval
    cross = max(a * d - b * c - n / 2, 0) if a * d > b * c else a * d - b * c
    phi = cross / math.sqrt(denom) if denom else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    diff = p1 - p2
    return {"drop": round(100 * diff, 3), "drop_95": [round(100 * (diff - delta), 3), round(100 * (diff + eps), 3)],
            "broken": b, "fixed": c}


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def output_error(probs: np.ndarray, reference: np.ndarray) -> float:
    """The sensitivity measure: mean over images of the largest |dp| of any class."""
    dp = np.abs(np.asarray(probs).reshape(len(reference), -1) - np.asarray(reference).reshape(len(reference), -1))
    return float(dp.max(axis=1).mean()) if dp.size else 0.0


def explain_lines(filename: str, ranking: Sequence[LayerScore], top: int = EXPLAIN_TOP) -> list[str]:
    """The ``--explain`` table: the worst layers of one int8 file."""
    lines = [f"  {filename}: layers int8 hurts most (output error when only that layer is int8; share of MACs)"]
    for i, s in enumerate(ranking[:top], 1):
        lines.append(f"    {i:2d}. {s.layer:<28s} error {s.error:.4f}   MACs {100 * s.mac_share:5.1f}%")
    return lines


def report(ranking: Sequence[LayerScore], selection: str) -> dict:
    """The manifest's record of a ranking (the top :data:`RANKING_KEPT`)."""
    kept = [{"layer": s.layer, "error": round(s.error, 6), "mac_share": round(s.mac_share, 6)}
            for s in ranking[:RANKING_KEPT]]
    return {"ranking": kept, "selection_split": selection,
            "float_layers": []}
