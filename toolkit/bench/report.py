"""Write a benchmark result as JSON, a Markdown table and a bar chart of batch-1 latency."""

from __future__ import annotations

from pathlib import Path


def markdown(result: dict) -> str:
    """The result as a Markdown table, one row per file and thread count."""
    bigs = [str(b) for b in result["batches"] if b > 1]
    cpu = result["cpu"]
    degraded = result.get("degraded")  # absent in results written before --degrade
    lines = [
        f"# Benchmark: {result['model']} ({Path(result['folder']).name})",
        "",
        f"Data: {result['data']}. CPU: {cpu['cpu']}, {cpu['cores']} cores; int8 features: "
        f"{', '.join(cpu['described']) or 'none'}."
        + (f" Degraded: the same images through {', '.join(degraded['operations'])} (seed {degraded['seed']})."
           if degraded else ""),
        "",
        "| file | format | quant | MB | acc % | " + ("degraded acc % | " if degraded else "")
        + "agree % | threads | p50 ms | p90 ms | p99 ms | "
        + " | ".join(f"img/s @{b}" for b in bigs)
        + " |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(bigs) + bool(degraded)),
    ]
    for r in result["rows"]:
        agree = "" if r["agreement"] is None else f"{r['agreement']:.1f}"
        lines.append(
            f"| {r['file']} | {r['format']} | {r['quantization']} | {r['size_mb']:.3f} | "
            f"{r['accuracy']:.1f} | "
            + (f"{r['degraded_accuracy']:.1f} | " if degraded else "")
            + f"{agree} | {r['threads']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | " + " | ".join(f"{r['throughput'].get(b, 0):.0f}" for b in bigs) + " |"
        )
    door = [r for r in result["rows"] if r.get("door")]
    if door:
        d0 = door[0]["door"]
        lines += ["", f"At each file's door threshold ({d0['negatives']} negatives, {d0['positives']} positives; "
                  "95 % Wilson intervals):", "",
                  "| file | threshold | FAR % | FRR % |" + (" degraded FAR % | degraded FRR % |" if degraded else ""),
                  "|---|---:|---:|---:|" + ("---:|---:|" if degraded else "")]
        seen = set()
        for r in door:
            if r["file"] in seen:  # one line per file, not per thread count
                continue
            seen.add(r["file"])
            d = r["door"]
            cells = [_rate(d["far"], d["far_95"]), _rate(d["frr"], d["frr_95"])]
            if degraded and d.get("degraded"):
                cells += [_rate(d["degraded"]["far"], d["degraded"]["far_95"]),
                          _rate(d["degraded"]["frr"], d["degraded"]["frr_95"])]
            lines.append(f"| {r['file']} | {d['threshold']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _rate(value: float, interval) -> str:
    if interval is None:
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})"


def plot(result: dict, path: Path) -> None:
    """Grouped bars: batch-1 p50 latency per file, one bar per thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = list(dict.fromkeys(r["file"] for r in result["rows"]))
    threads = result["threads"]
    width = 0.8 / max(1, len(threads))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(files) + 2), 4))
    for j, t in enumerate(threads):
        vals = [next((r["p50_ms"] for r in result["rows"] if r["file"] == f and r["threads"] == t), 0) for f in files]
        ax.bar(np.arange(len(files)) + j * width, vals, width, label=f"{t} thread(s)")
    ax.set_xticks(np.arange(len(files)) + width * (len(threads) - 1) / 2)
    ax.set_xticklabels(files, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("latency p50, batch 1 (ms)")
    ax.set_title(f"{result['model']}: batch-1 latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(folder: Path, result: dict, log=None) -> list[str]:
    """benchmark.json, benchmark.md and benchmark.png in ``folder`` (each written atomically).

    Returns:
        the names written; the chart is left out (and ``log`` told) where matplotlib is not installed (a Pi).
    """
    import importlib.util
    import os
    import tempfile

    from toolkit.train.runs import write_json_atomic

    folder = Path(folder)
    write_json_atomic(folder / "benchmark.json", result)
    md = folder / "benchmark.md"
    md.with_suffix(".md.tmp").write_text(markdown(result))
    os.replace(md.with_suffix(".md.tmp"), md)
    if importlib.util.find_spec("matplotlib") is None:
        if log:
            log("benchmark.png skipped: the chart needs matplotlib (pip install 'door-camera-toolkit[train]')")
        return ["benchmark.json", "benchmark.md"]
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".png")
    os.close(fd)
    plot(result, Path(tmp))
    os.replace(tmp, folder / "benchmark.png")
    return ["benchmark.json", "benchmark.md", "benchmark.png"]
