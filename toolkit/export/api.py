"""``export(config) -> Path``: the one library function behind ``toolkit export``.

Every file is converted, run on held-out data, compared with the float Keras model and only then
kept; the folder appears complete (files + manifest.json + report.md) or not at all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit import __version__
from toolkit._keras import predict_array
from toolkit.errors import ToolkitError
from toolkit.export import automix, mixed
from toolkit.export.config import ExportConfig
from toolkit.export.formats import Context, select
from toolkit.export.manifest import build_manifest, file_entry, provenance
from toolkit.export.publish import _check_out, _publish, clean_stale, report_markdown, staged  # noqa: F401 - api names
from toolkit.export.quantize import calibration_images, check_images
from toolkit.export.records import (  # noqa: F401 - api names (tests import _threshold_rule, _copy_base_licence)
    _copy_base_licence,
    _input_size,
    _output_kind,
    _threshold_rule,
    data_record,
)
from toolkit.export.validate import (
    GateError,
    allowed_drop,
    classes,
    compare,
    gate,
    load_runner,
    predict,
    threshold_at,
)
from toolkit.inference.manifest import FileEntry

BARE_SPLIT = {"val": 0.15, "test": 0.15}  # how a bare model file's --data is split (the run defaults)


def export(config: ExportConfig, log: Callable[[str], None] | None = None) -> Path:
    """Export ``config.source`` to ``config.out``; returns the folder.

    Raises:
        ToolkitError: bad source, data, combination, or a file that fails validation (nothing is written).
    """
    from toolkit.train.runs import resolve_model

    out = Path(config.out)
    _check_out(out, config.overwrite)
    select(config)  # reject unknown combinations before loading anything heavy
    if not Path(config.source).exists():
        raise ToolkitError(f"{config.source}: not found; give a run folder from 'toolkit train' or a .keras model file")
    model, run = resolve_model(config.source)
    if run is not None and run.config.get("hands"):  # palm -> landmarks -> head: its own chain and validation
        from toolkit.export.hands import export_hands

        return export_hands(run, model, config, log or (lambda msg: print(msg, file=sys.stderr)))
    if run is not None:
        from toolkit.export.featurechain import chain_plan, export_feature_chain

        plan = chain_plan(run, model, config, log or (lambda msg: print(msg, file=sys.stderr)))
        if plan is not None:  # a head on a frozen base's cached features: base.onnx -> head.onnx, adaptable
            return export_feature_chain(run, model, plan, config, log or (lambda msg: print(msg, file=sys.stderr)),
                                        check_fused=_check_file)
        splits = run.splits(config.data, config.strict)
        return export_model(
            model,
            labels=run.labels,
            splits=splits,
            config=config,
            model_name=run.model_name,
            source_file=run.model_file,
            run_dir=run.path,
            data_spec=config.data or run.config["train"]["data"],
            trained_on=run.config["train"]["data"],
            log=log,
        )
    if not config.data:
        raise ToolkitError(
            f"{config.source}: a bare model file has no labels or test split; "
            "pass --data SPEC (or export the run folder instead)"
        )
    from toolkit.data import load_data

    h, w = _input_size(model)
    ds = load_data(config.data, (h, w), strict=config.strict)
    splits = ds.split(seed=config.seed, **BARE_SPLIT)
    return export_model(
        model,
        labels=tuple(ds.labels),
        splits=splits,
        config=config,
        model_name=model.name,
        source_file=Path(config.source),
        run_dir=None,
        data_spec=config.data,
        log=log,
    )


def export_model(
    model,
    *,
    labels: tuple,
    splits,
    config: ExportConfig,
    model_name: str,
    source_file: Path,
    run_dir: Path | None = None,
    data_spec: str = "",
    trained_on: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Export an in-memory model with explicit labels and splits (what :func:`export` resolves)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(config.out)
    _check_out(out, config.overwrite)
    formats = select(config)
    image_size = _input_size(model)
    output_kind = _output_kind(model, labels)
    held_out = splits.test if len(splits.test) else splits.val
    if not len(held_out):
        raise ToolkitError(
            f"{data_spec or 'data'}: no test or validation images to validate the export on; "
            "pass --data with held-out images"
        )
    x_val, y_val = held_out.numpy()
    check_images(x_val, image_size, f"validation data ({held_out.name} split)")
    x_val = x_val.astype(np.float32)
    reference = predict_array(model, x_val, 32).reshape(len(x_val), -1)
    detector = None
    if config.detector == "blazeface":  # before the long conversions: a missing wheel fails at once
        from toolkit.models.detector import ensure_detector

        detector = ensure_detector()
    choose, threshold_source = _threshold_rule(run_dir, out, splits, held_out, y_val, output_kind, config.target_far,
                                               log)
    needs_calibration = any(f.quantization in ("int8", "qat") for f in formats)
    pool, selection = automix.selection_split(model, splits, held_out, formats, config)
    calibration, calibration_fp = (
        calibration_images(pool, config.calibration, image_size, config.seed, config.calibration_degrade)
        if needs_calibration
        else (None, None)
    )

    with staged(out) as (staging, workdir):
        metadata = {
            "labels": list(labels),
            "toolkit_version": __version__,
            "output_kind": output_kind,
            "model": model_name,
            "input": "image: float32 NHWC RGB 0-255",
        }
        ctx = Context(model, tuple(labels), image_size, calibration, splits.train, config, metadata, workdir)
        entries, failed = {}, {}
        for fmt in formats:
            path = staging / fmt.filename
            log(f"export {fmt.filename} ...")
            fmt.export_fn(ctx, path)
            try:
                entries[fmt.filename] = _check_file(fmt, ctx, path, config, selection, held_out, x_val, y_val,
                                                    reference, output_kind, choose, log)
            except GateError as exc:  # the files that pass are still written; this one is named
                failed[fmt.filename] = str(exc)
                path.unlink(missing_ok=True)
                log(f"  {fmt.filename}: not written: {exc}")
        if failed and not entries:
            raise GateError("; ".join(failed.values()) + "; nothing written")

        source = provenance(source_file, run_dir)
        data = data_record(data_spec, trained_on, held_out, splits, threshold_source, selection, calibration,
                           calibration_fp, pool, config)
        from toolkit.train.runs import versions

        detector_record = {}
        if detector is not None:
            from toolkit.models.detector import copy_detector

            detector_record = copy_detector(staging, detector)
        base_record = _copy_base_licence(staging, model_name)

        manifest = build_manifest(
            name=out.name,
            model_name=model_name,
            labels=labels,
            image_size=image_size,
            output_kind=output_kind,
            entries=entries,
            target_far=config.target_far,
            source=source,
            data=data,
            versions=versions(),
            detector=detector_record,
            base=base_record,
        )
        manifest.write(staging)
        (staging / "report.md").write_text(report_markdown(manifest) + "".join(
            f"\nNot written: {reason}\n" for reason in failed.values()))
        _publish(staging, out, config.overwrite)
    log(f"wrote {out} (serve: {manifest.serve})")
    if failed:  # after the rename: the passing files are there, and the command still says something failed
        raise GateError(f"{out}: wrote {', '.join(entries)}; not {'; not '.join(failed.values())}")
    return out


def _check_file(fmt, ctx, path: Path, config, selection, held_out, x_val, y_val, reference, output_kind: str,
                choose, log) -> FileEntry:
    """Validate one written file against the float model (automatic mixed precision first when an int8 file
    misses); its manifest entry.

    Raises:
        GateError: the file is wrong or loses more than the split allows (see :func:`gate`).
    """
    runner = load_runner(path)
    probs, validation = _validate(fmt, ctx, runner, x_val, y_val, reference)
    record = None
    plugged = automix.plug(fmt) if selection is not None else None
    missed = validation["drop"] > allowed_drop(config.max_drop, validation["n"])
    if plugged is None and selection is not None and fmt.quantization == "int8" and (missed or config.explain):
        log(f"  {fmt.filename}: no layer sensitivity for this format yet (no --explain, no mixed precision)")
    needed = missed and config.mixed_precision == "auto" and plugged is not None
    if plugged is not None and (config.explain or needed):
        record, new_runner = automix.choose(ctx, fmt, plugged, path, selection(), needed=needed,
                                          max_drop=config.max_drop, log=log)
        if needed:
            plain = {k: validation[k] for k in ("accuracy", "agreement", "max_abs_dprob", "drop", "drop_95")}
            record["plain_int8"] = plain
            if new_runner is None:
                gate(fmt, validation, config.max_drop, record)
            runner = new_runner
            probs, validation = _validate(fmt, ctx, runner, x_val, y_val, reference)
            record.update(drop=validation["drop"], drop_95=validation["drop_95"])
            gate(fmt, validation, config.max_drop, record)
            log(automix.summary(fmt.filename, record, plain, validation))
    gate(fmt, validation, config.max_drop)
    if fmt.lossy:  # what the gate allowed on this split, for a reader who sees a drop above --max-drop
        validation["allowed_drop"] = round(allowed_drop(config.max_drop, validation["n"]), 4)
    threshold = None
    if output_kind == "sigmoid":
        threshold = threshold_at(choose(runner, probs), probs[:, 0], y_val)
        validation.update({k: threshold.get(k) for k in ("negatives", "positives", "far_upper_95", "far_95",
                                                         "frr_95")})
    entry = file_entry(path, fmt, validation, threshold, runner.input_dtype, record)
    log(
        f"  {fmt.filename}: accuracy {validation['accuracy']:.1f}% "
        f"(float {validation['float_accuracy']:.1f}%), "
        f"agreement {validation['agreement']:.1f}%, max|dp| {validation['max_abs_dprob']:.4f}"
        + (f", drop {validation['drop']:.1f} points (95% interval {validation['drop_95'][0]:.1f} to "
           f"{validation['drop_95'][1]:.1f}, {held_out.name} split)" if fmt.lossy and validation["drop_95"]
           else "")
    )
    return entry


def _validate(fmt, ctx, runner, x_val: np.ndarray, y_val: np.ndarray, reference: np.ndarray):
    """(probabilities, validation numbers) of one file on the held-out split, with the drop's paired interval."""
    probs = predict(runner, x_val)
    validation = compare(probs, reference, y_val)
    source_ref = reference
    if fmt.quantization == "qat":
        source_ref = predict_array(ctx.qat_model(), x_val, 32).reshape(reference.shape)
    validation["max_abs_dprob_source"] = float(np.abs(probs - source_ref).max())
    validation["atol"] = fmt.atol
    validation["drop"] = round(validation["float_accuracy"] - validation["accuracy"], 3)
    validation["drop_95"] = mixed.paired_drop(classes(reference), classes(probs), y_val)["drop_95"]
    return probs, validation
