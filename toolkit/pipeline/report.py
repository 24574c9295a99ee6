"""The pipeline report: ``report.md`` and a self-contained ``report.html`` (images embedded).

Both are rendered from one list of blocks, so they always say the same thing: data summary with a
sample grid, training curves, confusion matrix, the per-file comparison of exported files, the
benchmark, and for binary tasks the false-accept / false-reject curve with the chosen threshold.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import numpy as np

from toolkit.pipeline.spec import Pipeline

GRID_PER_CLASS = 8


def _sample_spec(spec: str, n: int) -> str:
    """``spec`` with its subsample size set to ``n`` (the grid needs only a few images per class)."""
    base, _, query = spec.partition("?")
    opts = [kv for kv in query.split("&") if kv and not kv.startswith("n=")]
    return f"{base}?{'&'.join([*opts, f'n={n}'])}"


def _far_frr_plot(p_pos: np.ndarray, y: np.ndarray, threshold: float, path: Path) -> None:
    from toolkit.metrics import far_frr
    from toolkit.train.plots import _plt

    plt = _plt()
    ts = np.linspace(0, 1, 201)
    curves = np.array([far_frr(p_pos, y == 1, t) for t in ts])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(ts, curves[:, 0], label="false-accept rate (door opens, no smile)")
    ax.plot(ts, curves[:, 1], label="false-reject rate (smile, door stays shut)")
    ax.axvline(threshold, color="black", ls="--", label=f"chosen threshold {threshold:.3f}")
    ax.set_xlabel("threshold on P(positive)")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _blocks(p: Pipeline, outputs: dict, folder: Path) -> list[tuple]:
    from toolkit.data import load_data
    from toolkit.data.export import grid_image
    from toolkit.inference.manifest import load_manifest
    from toolkit.train.runs import load_run

    run = load_run(outputs["train"])
    manifest = load_manifest(outputs["export"])
    cfg = run.config
    blocks: list[tuple] = [("h1", f"Pipeline report: {p.name}")]
    if p.section("pipeline")["description"]:
        blocks.append(("p", p.section("pipeline")["description"]))
    blocks.append(("p", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from {p.path}; toolkit "
                        f"{cfg['versions'].get('toolkit', '?')}, TensorFlow {cfg['versions'].get('tensorflow', '?')}."))

    blocks.append(("h2", "Data"))
    sizes = cfg["sizes"]
    blocks.append(("table", ["split", "images", "fingerprint"],
                   [[s, sizes[s], cfg["fingerprints"][s][:16]] for s in ("train", "val", "test")]))
    blocks.append(("p", f"Source `{cfg['train']['data']}`, labels {', '.join(cfg['labels'])}, "
                        f"images {cfg['image_size'][0]}x{cfg['image_size'][1]} RGB."))
    grid = grid_image(load_data(_sample_spec(cfg["train"]["data"], GRID_PER_CLASS * len(cfg["labels"])),
                                run.image_size), columns=GRID_PER_CLASS)
    grid.save(folder / "samples.png")
    blocks.append(("img", "samples.png", "sample images per class"))

    blocks.append(("h2", "Training"))
    metrics = json.loads((run.path / "metrics.json").read_text())
    blocks.append(("p", f"Model `{run.model_name}` ({cfg['params']:,} parameters). Test accuracy of the float "
                        f"Keras model: **{100 * metrics['accuracy']:.2f}%** on {metrics['n']} images "
                        f"(loss {metrics['loss']:.4f})."))
    for name, alt in (("curves.png", "training curves"), ("confusion.png", "confusion matrix")):
        if (run.path / name).is_file():
            (folder / name).write_bytes((run.path / name).read_bytes())
            blocks.append(("img", name, alt))

    blocks.append(("h2", "Exported files"))
    rows = []
    for fname, e in manifest.files.items():
        v = e.validation
        rows.append([fname, e.format, e.quantization, f"{e.bytes / 1e6:.3f}", f"{v.get('accuracy', 0):.2f}",
                     f"{v.get('agreement', 0):.2f}", f"{v.get('max_abs_dprob', 0):.4f}",
                     "" if e.threshold is None else f"{e.threshold:.3f}",
                     "" if e.far is None else f"{100 * e.far:.2f}", "" if e.frr is None else f"{100 * e.frr:.2f}"])
    blocks.append(("table", ["file", "format", "quant", "MB", "acc %", "agree %", "max Δp", "threshold",
                             "FAR %", "FRR %"], rows))
    blocks.append(("p", f"The door runtime serves `{manifest.serve}` by default "
                        f"(`toolkit door serve --model {outputs['export']}`)."))

    bench = outputs["export"] / "benchmark.json"
    if bench.is_file():
        result = json.loads(bench.read_text())
        blocks.append(("h2", "Benchmark"))
        blocks.append(("p", f"CPU: {result['cpu']['cpu']}, {result['cpu']['cores']} cores; int8 features: "
                            f"{', '.join(result['cpu']['described']) or 'none'}."))
        bigs = [b for b in result["batches"] if b > 1]
        blocks.append(("table", ["file", "format", "quant", "MB", "acc %", "threads", "p50 ms", "p99 ms",
                                 *[f"img/s @{b}" for b in bigs]],
                       [[r["file"], r["format"], r["quantization"], f"{r['size_mb']:.3f}", f"{r['accuracy']:.1f}",
                         r["threads"], f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                         *[f"{r['throughput'].get(str(b), r['throughput'].get(b, 0)):.0f}" for b in bigs]]
                        for r in result["rows"]]))
        if (outputs["export"] / "benchmark.png").is_file() and outputs["export"] != folder:
            (folder / "benchmark.png").write_bytes((outputs["export"] / "benchmark.png").read_bytes())
        if (folder / "benchmark.png").is_file():
            blocks.append(("img", "benchmark.png", "benchmark chart"))

    serve = manifest.files.get(manifest.serve) if manifest.serve else None
    if manifest.output_kind == "sigmoid" and serve is not None and serve.threshold is not None:
        from toolkit.export.validate import load_runner, predict

        x, y = run.splits().test.numpy()
        if manifest.pipeline == "features":  # the serve file is the head: run the chain the door runs
            from toolkit.inference.predictor import Predictor

            runner = Predictor(outputs["export"]).run
        else:
            runner = load_runner(outputs["export"] / manifest.serve)
        probs = predict(runner, x)
        p_pos = probs[:, -1] if probs.ndim == 2 else probs
        _far_frr_plot(p_pos, y, serve.threshold, folder / "far_frr.png")
        blocks.append(("h2", "Door threshold"))
        blocks.append(("p", f"`{manifest.serve}` opens the door when P({manifest.labels[1]}) >= "
                            f"**{serve.threshold:.3f}**, chosen for a false-accept rate of at most "
                            f"{100 * (manifest.target_far or 0):.1f}%: measured FAR {100 * serve.far:.2f}%, "
                            f"FRR {100 * serve.frr:.2f}% on the test split."))
        blocks.append(("img", "far_frr.png", "false-accept and false-reject rates by threshold"))
    return blocks


def _markdown(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        if b[0] in ("h1", "h2"):
            out.append(("#" if b[0] == "h1" else "##") + " " + b[1])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "table":
            out.append("| " + " | ".join(map(str, b[1])) + " |")
            out.append("|" + "---|" * len(b[1]))
            out += ["| " + " | ".join(map(str, row)) + " |" for row in b[2]]
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})")
        out.append("")
    return "\n".join(out)


def _inline_md(text: str) -> str:
    """Escape, then render the two inline marks the report uses: **bold** and `code`."""
    parts = html.escape(text).split("**")
    text = "".join(f"<b>{s}</b>" if i % 2 else s for i, s in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{s}</code>" if i % 2 else s for i, s in enumerate(parts))


def _html(blocks: list[tuple], folder: Path, title: str) -> str:
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2"):
            body.append(f"<{b[0]}>{html.escape(b[1])}</{b[0]}>")
        elif b[0] == "p":
            body.append(f"<p>{_inline_md(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode((folder / b[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#eee}img{max-width:100%}code{background:#f4f4f4}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(p: Pipeline, outputs: dict) -> Path:
    """Write report.md, report.html and their PNGs into the export folder; returns the HTML path."""
    folder = Path(outputs["export"])
    blocks = _blocks(p, outputs, folder)
    (folder / "report.md").write_text(_markdown(blocks))
    path = folder / "report.html"
    path.write_text(_html(blocks, folder, f"{p.name} report"))
    return path
