"""Layer tables with parameter counts and multiply-accumulates (MACs), per layer and in total.

MACs make the seed's argument for 1x1 convolutions concrete: a bottleneck's 1x1 layers shrink the
channels the expensive 3x3 convolution works on.
"""

from __future__ import annotations

import numpy as np


def layer_macs(layer) -> int:
    """Multiply-accumulates one forward pass of ``layer`` costs for a single image."""
    kind = type(layer).__name__
    if kind in ("Conv2D", "DepthwiseConv2D"):
        out = layer.output_shape
        kh, kw = layer.kernel_size
        cin = layer.input_shape[-1]
        per_output = kh * kw * (1 if kind == "DepthwiseConv2D" else cin // layer.groups)
        return int(np.prod(out[1:]) * per_output)
    if kind == "Dense":
        return int(layer.input_shape[-1] * layer.units)
    return 0


def summarize(model) -> list[dict]:
    """One row per layer: name, type, output shape, parameters, MACs."""
    rows = []
    for layer in model.layers:
        shape = layer.output_shape
        rows.append({
            "name": layer.name,
            "type": type(layer).__name__,
            "output": "x".join(str(d) for d in (shape[1:] if isinstance(shape, tuple) else shape[0][1:])),
            "params": int(layer.count_params()),
            "macs": layer_macs(layer),
        })
    return rows


def param_counts(model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return {"total": trainable + frozen, "trainable": trainable, "non_trainable": frozen}


def format_summary(model) -> str:
    """The layer table and totals as text."""
    rows = summarize(model)
    w = max(len(r["name"]) for r in rows)
    t = max(len(r["type"]) for r in rows)
    lines = [f"{'layer':<{w}}  {'type':<{t}}  {'output':>14}  {'params':>12}  {'MACs':>15}"]
    for r in rows:
        lines.append(f"{r['name']:<{w}}  {r['type']:<{t}}  {r['output']:>14}  {r['params']:>12,}  {r['macs']:>15,}")
    counts = param_counts(model)
    total_macs = sum(r["macs"] for r in rows)
    lines += [
        "",
        f"Total params: {counts['total']:,}",
        f"Trainable params: {counts['trainable']:,}",
        f"Non-trainable params: {counts['non_trainable']:,}",
        f"Total MACs per image: {total_macs:,} ({total_macs / 1e9:.3f} G)",
    ]
    return "\n".join(lines)
