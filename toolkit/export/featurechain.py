"""Export a head trained on a frozen base's cached features as a ``features`` chain the door can adapt.

A run of ``toolkit finetune ... --cache-features`` (``--head cv`` or a Keras head; ``mode = "cached"`` in a
pipeline) trained only the layers after its feature cut (``features.json``'s ``layer``). Its ONNX export is::

    base.onnx [base_int8.onnx ...]  the frozen base up to the cut: image [N, H, W, 3] (0-255) -> features [N, D]
    head.onnx                       features -> standardiser -> linear -> sigmoid/softmax (the ``serve`` entry;
                                    :mod:`toolkit.export.linearhead`, the face-landmark export's head writer)
    model*.tflite                   TFLite stays one fused file (base + head) per quantization, as before
    manifest.json  report.md  LICENSE.*  (pipeline "features", chain: base, bases, output, layer, head)

Each base variant is one ``files`` entry validated end to end through the door's own
:class:`~toolkit.inference.predictor.Predictor` (image -> that base -> head.onnx) against the float Keras model,
gated like any file; the door runs the best one (int8 when it holds) and ``--file base.onnx`` picks another.
``head.onnx`` alone is held to the folded Keras head on the same features. Only the head depends on the camera,
so ``toolkit door adapt`` refits it on the Pi. A head that is not linear (a hidden layer) keeps the fused export.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.export.linearhead import HEAD_FILE, HeadFile, fold_keras_head, head_record

PIPELINE = "features"
HEAD_ATOL = 1e-5  # head.onnx against the numpy head on the same features: float32 rounding only
FOLD_ATOL = 1e-4  # the folded numpy head on the Keras base's features against the Keras model: a wrong fold


@dataclasses.dataclass(frozen=True)
class ChainPlan:
    """Where a cached-feature run's model is cut, and its head as one linear :class:`HeadFile`."""

    layer: str  # the last layer of the base (its output is the features)
    head: HeadFile


def chain_plan(run, model, config, log: Callable[[str], None]) -> ChainPlan | None:
    """The plan for a run whose head was trained on cached features, or None (export one fused file as before).

    None also when ``--format`` has no ONNX (TFLite stays fused) or the head is not linear (said in one line).
    """
    if not (run.config.get("finetune") or {}).get("cache_features") or "onnx" not in config.formats:
        return None
    try:
        layer = json.loads((run.path / "features.json").read_text())["layer"]
    except (OSError, ValueError, KeyError):
        log(f"note: {run.path}: no features.json naming the feature cut; exported as one fused model (not adaptable)")
        return None
    names = [la.name for la in model.layers]
    if layer not in names:
        log(f"note: {run.path}: the feature cut {layer!r} is not a layer of the model; exported as one fused model")
        return None
    head, why = fold_keras_head(model.layers[names.index(layer) + 1:])
    if head is None:
        log(f"note: {run.path}: {why}; exported as one fused model, which the door cannot adapt")
        return None
    return ChainPlan(layer, head)


def _base_name(fmt) -> str:
    return "base" + ("" if fmt.quantization == "none" else f"_{fmt.quantization}") + fmt.suffix


def export_feature_chain(run, model, plan: ChainPlan, config, log: Callable[[str], None], *,
                         check_fused: Callable) -> Path:
    """Write ``config.out`` as a ``features`` chain (module docstring); returns the folder.

    ``check_fused``: how a fused (TFLite) file is validated and gated, :func:`toolkit.export.api._check_file`
    (the caller's, so both exports hold such files to one rule).

    Raises:
        ToolkitError: no held-out images, ``--quantize qat`` for ONNX, a head that does not reproduce the model,
            or every file failing its check (nothing written; a failing file among passing ones is named, exit 2).
    """
    from toolkit._keras import keras, predict_array
    from toolkit.export import automix, records
    from toolkit.export.formats import Context, select
    from toolkit.export.manifest import build_manifest, choose_serve, provenance
    from toolkit.export.publish import _check_out, _publish, report_markdown, staged
    from toolkit.export.quantize import calibration_images, check_images
    from toolkit.export.validate import GateError, OnnxRunner
    from toolkit.train.runs import versions

    out = Path(config.out)
    _check_out(out, config.overwrite)
    formats = select(config)
    if any(f.name == "onnx" and f.quantization == "qat" for f in formats):
        raise ToolkitError(f"--quantize qat: {run.path} trained a head on a frozen base's cached features, and QAT "
                           "would retrain the base; its ONNX chain takes none, float16, dynamic or int8 "
                           "(--format tflite --quantize qat still writes a fused file)")
    labels = tuple(run.labels)
    splits = run.splits(config.data, config.strict)
    image_size = records._input_size(model)
    output_kind = records._output_kind(model, labels)
    held_out = splits.test if len(splits.test) else splits.val
    if not len(held_out):
        raise ToolkitError(f"{config.data or run.path}: no test or validation images to validate the export on; "
                           "pass --data with held-out images")
    x_val, y_val = held_out.numpy()
    check_images(x_val, image_size, f"validation data ({held_out.name} split)")
    x_val = x_val.astype(np.float32)
    reference = predict_array(model, x_val, 32).reshape(len(x_val), -1)
    base = keras().Model(model.input, model.get_layer(plan.layer).output, name=f"{model.name}_base")
    features = predict_array(base, x_val, 32).reshape(len(x_val), -1)
    fold_dp = float(np.abs(plan.head.predict(features) - reference).max())
    if fold_dp > FOLD_ATOL:
        raise ToolkitError(f"{run.path}: the head after {plan.layer!r} read as a linear head differs from the model "
                           f"by {fold_dp:.2e} > {FOLD_ATOL:g}; export it with --format tflite (a fused file)")
    detector = None
    if config.detector == "blazeface":  # before the long conversions: a missing wheel fails at once
        from toolkit.models.detector import ensure_detector

        detector = ensure_detector()
    choose, threshold_source = records._threshold_rule(run.path, out, splits, held_out, y_val, output_kind,
                                                   config.target_far, log)
    pool, selection = automix.selection_split(model, splits, held_out, formats, config)
    calibration, calibration_fp = (
        calibration_images(pool, config.calibration, image_size, config.seed, config.calibration_degrade)
        if any(f.quantization in ("int8", "qat") for f in formats) else (None, None))

    with staged(out) as (staging, workdir):
        from toolkit import __version__

        metadata = {"labels": list(labels), "toolkit_version": __version__, "output_kind": output_kind,
                    "model": run.model_name, "input": "image: float32 NHWC RGB 0-255"}
        fused = Context(model, labels, image_size, calibration, splits.train, config, metadata, workdir)
        (workdir / "base").mkdir()
        based = Context(base, labels, image_size, calibration, splits.train, config,
                        {**metadata, "output_kind": "features", "pipeline": PIPELINE}, workdir / "base")
        log(f"export {HEAD_FILE} ...")
        from toolkit.export.linearhead import write_head_onnx

        head_path = write_head_onnx(plan.head, staging / HEAD_FILE, config.opset,
                                    {"pipeline": PIPELINE, "labels": list(labels), "output_kind": output_kind})
        head_dp = float(np.abs(OnnxRunner(head_path, threads=1)(features).reshape(reference.shape)
                               - plan.head.predict(features)).max())
        if head_dp > HEAD_ATOL:
            raise ToolkitError(f"{HEAD_FILE}: differs from the numpy head by {head_dp:.2e} > {HEAD_ATOL:g}; a bug")
        base_record = records._copy_base_licence(staging, run.model_name)
        chain = {"layer": plan.layer, "features": int(features.shape[1]), "output": None,
                 "source": f"{run.model_name} up to layer {plan.layer} (frozen; trained weights of "
                           f"{run.model_file.name})",
                 "licence": base_record.get("licence"), "head": head_record(plan.head, max_abs_dprob=head_dp),
                 "bases": {}}  # fmt: skip
        entries, failed, bases = {}, {}, {}
        detector_record = {}
        if detector is not None:
            from toolkit.models.detector import copy_detector

            detector_record = copy_detector(staging, detector)

        def manifest_with(files: dict, base_file: str | None, data: dict | None = None, head_entry=None):
            record = {**chain, "bases": {k: files[k].sha256 for k in bases if k in files}}
            if base_file is not None:
                record.update(base=base_file, sha256=files[base_file].sha256)
            listed = {HEAD_FILE: head_entry or _entry(head_path, "none", {}, None)} | files
            m = build_manifest(name=out.name, model_name=run.model_name, labels=labels, image_size=image_size,
                               output_kind=output_kind, entries=listed, target_far=config.target_far,
                               source=provenance(run.model_file, run.path), data=data or {}, versions=versions(),
                               detector=detector_record, base=base_record)  # fmt: skip
            return dataclasses.replace(m, pipeline=PIPELINE, serve=HEAD_FILE, chain=record)

        for fmt in formats:
            name = _base_name(fmt) if fmt.name == "onnx" else fmt.filename
            path = staging / name
            log(f"export {name} ...")
            try:
                if fmt.name != "onnx":  # TFLite: the fused model, checked as every fused file is
                    fmt.export_fn(fused, path)
                    entries[name] = check_fused(fmt, fused, path, config, selection, held_out, x_val, y_val,
                                                reference, output_kind, choose, log)
                    continue
                fmt.export_fn(based, path)
                bases[name] = True
                chain["output"] = chain["output"] or _output_name(path)
                entries[name] = _check_base(name, fmt, staging, entries, manifest_with, x_val, y_val, reference,
                                            output_kind, choose, config, held_out, log,
                                            mix=(based, selection, plan.head))
            except GateError as exc:  # the files that pass are still written; this one is named
                # a base cannot take QAT (it would retrain the frozen base): the gate's generic hint must not say so
                exc = GateError(str(exc).replace("try --quantize qat, ", "try ")) if name in bases else exc
                failed[name] = str(exc)
                bases.pop(name, None)
                entries.pop(name, None)
                path.unlink(missing_ok=True)
                log(f"  {name}: not written: {exc}")
        served = choose_serve({k: e for k, e in entries.items() if k in bases})
        if served is None:
            raise GateError("; ".join(failed.values()) + "; nothing written" if failed else
                            "no base file was written; nothing written")
        data = records.data_record(config.data or run.config["train"]["data"], run.config["train"]["data"], held_out,
                                   splits, threshold_source, selection, calibration, calibration_fp, pool, config)
        data["chain_validation"] = "each base file: image -> base -> head.onnx through the door's Predictor"
        e = entries[served]
        head_entry = dataclasses.replace(
            _entry(head_path, "none", {**e.validation, "chain_base": served, "head_max_abs_dprob": head_dp}, None),
            threshold=e.threshold, far=e.far, frr=e.frr)
        manifest = manifest_with(entries, served, data, head_entry)
        manifest.write(staging)
        (staging / "report.md").write_text(report_markdown(manifest) + _chain_md(manifest) + "".join(
            f"\nNot written: {reason}\n" for reason in failed.values()))
        _publish(staging, out, config.overwrite)
    log(f"wrote {out} (serve: {HEAD_FILE} on {served}, pipeline: {PIPELINE}; adaptable with 'toolkit door adapt')")
    if failed:
        raise GateError(f"{out}: wrote {', '.join(entries)}; not {'; not '.join(failed.values())}")
    return out


def _entry(path: Path, quantization: str, validation: dict, threshold: dict | None):
    from toolkit.export.manifest import file_entry

    return file_entry(path, types.SimpleNamespace(name="onnx", quantization=quantization), validation, threshold,
                      "float32")


def _output_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.output[0].name


def _check_base(name: str, fmt, staging: Path, entries: dict, manifest_with, x_val, y_val, reference,
                output_kind: str, choose, config, held_out, log, mix=None):
    """Validate the chain through base file ``name`` with the door's Predictor; its manifest entry.

    An int8 base that misses the gate gets automatic mixed precision first (``mix``: the base's export context,
    the selection split and the head), as a fused int8 file does: its layers are ranked by the error they cause
    in the features, and the fewest kept float whose chain answers agree with float on the selection split.

    Raises:
        GateError: a float base that does not reproduce the model, or a lossy one past ``--max-drop``.
    """
    from toolkit.export import automix
    from toolkit.export.validate import allowed_drop, gate, threshold_at

    named = types.SimpleNamespace(filename=name, lossy=fmt.lossy, atol=fmt.atol, quantization=fmt.quantization,
                                  name=fmt.name, suffix=fmt.suffix)
    predictor, probs, validation = _run_chain(name, fmt, staging, entries, manifest_with, x_val, y_val, reference)
    record = None
    based, selection, head = mix if mix is not None else (None, None, None)
    plugged = automix.plug(fmt) if selection is not None else None
    if (plugged is not None and config.mixed_precision == "auto"
            and validation["drop"] > allowed_drop(config.max_drop, validation["n"])):
        plain = {k: validation[k] for k in ("accuracy", "agreement", "max_abs_dprob", "drop", "drop_95")}
        record, runner = automix.choose(based, named, plugged, staging / name, selection(), needed=True,
                                        max_drop=config.max_drop, log=log, wrap=lambda r: _headed(r, head))
        record["plain_int8"] = plain
        if runner is None:
            gate(named, validation, config.max_drop, record)
        predictor, probs, validation = _run_chain(name, fmt, staging, entries, manifest_with, x_val, y_val,
                                                  reference)
        record.update(drop=validation["drop"], drop_95=validation["drop_95"])
        gate(named, validation, config.max_drop, record)
        log(automix.summary(name, record, plain, validation))
    gate(named, validation, config.max_drop)
    if fmt.lossy:
        validation["allowed_drop"] = round(allowed_drop(config.max_drop, validation["n"]), 4)
    threshold = None
    if output_kind == "sigmoid":
        threshold = threshold_at(choose(predictor.run, probs), probs[:, 0], y_val)
        validation.update({k: threshold.get(k) for k in ("negatives", "positives", "far_upper_95", "far_95",
                                                         "frr_95")})
    log(f"  {name} (-> {HEAD_FILE}, end to end, door Predictor): accuracy {validation['accuracy']:.1f}% "
        f"(float {validation['float_accuracy']:.1f}%), agreement {validation['agreement']:.1f}%, "
        f"max|dp| {validation['max_abs_dprob']:.4f}"
        + (f", drop {validation['drop']:.1f} points (95% interval {validation['drop_95'][0]:.1f} to "
           f"{validation['drop_95'][1]:.1f}, {held_out.name} split)" if fmt.lossy and validation["drop_95"] else ""))
    return dataclasses.replace(_entry(staging / name, fmt.quantization, validation, threshold),
                               mixed_precision=record)


def _run_chain(name: str, fmt, staging: Path, entries: dict, manifest_with, x_val, y_val, reference):
    """(the door's Predictor through base ``name``, its probabilities on the held-out images, their figures)."""
    from toolkit.cpu import cpu_count
    from toolkit.export import mixed
    from toolkit.export.validate import classes, compare, predict
    from toolkit.inference.predictor import Predictor

    provisional = {**entries, name: _entry(staging / name, fmt.quantization, {}, None)}
    manifest_with(provisional, name).write(staging)  # so the door's Predictor can open the folder as it will be
    predictor = Predictor(staging, name, threads=cpu_count())
    probs = predict(predictor.run, x_val, what=f"checking the chain through {name}")
    validation = compare(probs, reference, y_val)
    validation.update(max_abs_dprob_source=validation["max_abs_dprob"], atol=fmt.atol,
                      drop=round(validation["float_accuracy"] - validation["accuracy"], 3),
                      drop_95=mixed.paired_drop(classes(reference), classes(probs), y_val)["drop_95"],
                      chain=f"image -> {name} -> {HEAD_FILE} (door Predictor)")
    return predictor, probs, validation


def _headed(runner, head: HeadFile):
    """A base file's runner followed by the head: image -> probabilities, as mixed precision judges files."""
    return lambda x: head.predict(np.asarray(runner(x), np.float64).reshape(len(x), -1)).astype(np.float32)


def _chain_md(manifest) -> str:
    c = manifest.chain
    return (f"\nChain ({PIPELINE}): image -> `{c['base']}` (the frozen base up to `{c['layer']}`, {c['features']} "
            f"features) -> `{HEAD_FILE}` (standardiser + linear + "
            f"{'sigmoid' if manifest.output_kind == 'sigmoid' else 'softmax'}). Base variants: "
            f"{', '.join(f'`{b}`' for b in c['bases'])}; each row above for a base is the chain through it. "
            "Only the head depends on the camera: `toolkit door adapt` refits it on the door.\n")

