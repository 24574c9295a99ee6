"""Export a hand-sign run (``toolkit finetune hands``): palm ONNX + landmark ONNX + the head, chained.

The head (standardiser + logistic regression, a few hundred numbers) is written straight as an ONNX graph
(``features`` [N, 63 or 93] -> MatMul -> Add -> softmax/sigmoid) and checked against the Keras head. A run
whose head was fitted on hand features of another feature version is refused (fine-tune again): the door would
feed it other numbers.
Then the whole folder is validated end to end: the door's own :class:`~toolkit.inference.predictor.Predictor`
runs on the held-out images (image -> palm -> landmarks -> head) and is compared with the float pipeline
(the cached features -> the Keras head). An image without a hand is a wrong answer in both accuracies and
an agreement only when both pipelines found none. The head stays float: quantizing 63 or 93 x K weights saves
nothing, and the two tracker files are the wheel's float models as converted. The manifest's
``hands.features`` (version, set, orientation, dim) tells the door which features to compute.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.handpipe import FEATURE_INPUT, NO_HAND, PIPELINE, turns_of, with_no_hand

HEAD_FILE = "head.onnx"
HEAD_ATOL = 1e-5  # the ONNX head against the Keras head on the same features: float32 rounding only


def head_onnx(head, path: Path, opset: int = 17) -> Path:
    """Write the Keras head (BatchNormalization + Dense) as an ONNX graph on ``features`` -> ``probs``."""
    from onnx import TensorProto, helper

    from toolkit.export.onnx import save_checked

    norm, dense = head.layers[-2], head.layers[-1]
    gamma, beta, mean, var = (np.asarray(w, np.float32) for w in norm.get_weights())
    kernel, bias = (np.asarray(w, np.float32) for w in dense.get_weights())
    scale = (gamma / np.sqrt(var + norm.epsilon)).astype(np.float32)
    # ((x - mean) * scale + beta) @ W + b  ==  x @ (scale W) + ((beta - mean * scale) @ W + b)
    bias = (bias + (beta - mean * scale) @ kernel).astype(np.float32)
    kernel = (kernel * scale[:, None]).astype(np.float32)
    activation = "Sigmoid" if kernel.shape[1] == 1 else "Softmax"
    nodes = [helper.make_node("MatMul", [FEATURE_INPUT, "kernel"], ["logits0"]),
             helper.make_node("Add", ["logits0", "bias"], ["logits"]),
             helper.make_node(activation, ["logits"], ["probs"], **({"axis": -1} if activation == "Softmax" else {}))]
    inits = [helper.make_tensor("kernel", TensorProto.FLOAT, kernel.shape, kernel.ravel()),
             helper.make_tensor("bias", TensorProto.FLOAT, bias.shape, bias.ravel())]
    graph = helper.make_graph(
        nodes, "hands_head",
        [helper.make_tensor_value_info(FEATURE_INPUT, TensorProto.FLOAT, ["N", kernel.shape[0]])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", kernel.shape[1]])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="toolkit")
    save_checked(proto, path, {"pipeline": PIPELINE})
    return Path(path)


def export_hands(run, head, config, log: Callable[[str], None]) -> Path:
    """Export the run's head with the hand models into ``config.out``, validated end to end; returns the folder.

    Raises:
        ToolkitError: the run's models differ from the ones at hand, no held-out images, or a failed check.
    """
    from toolkit import __version__
    from toolkit._keras import predict_array
    from toolkit.export.manifest import build_manifest, provenance, spec_name
    from toolkit.export.publish import _check_out, _publish, report_markdown, staged
    from toolkit.export.validate import allowed_drop
    from toolkit.inference.handfeatures import FeatureSpec
    from toolkit.inference.handpipe import open_tracker
    from toolkit.inference.manifest import FileEntry, data_kind
    from toolkit.models.hands import copy_hand_models, ensure_hand_models
    from toolkit.train.hands import head_columns, landmark_features, model_sha256, models_key
    from toolkit.train.runs import versions

    out = Path(config.out)
    _check_out(out, config.overwrite)
    if set(config.formats) != {"onnx"} or tuple(config.quantize) != ("none",):
        log("note: a hand-sign export is float ONNX only (the head is 63 or 93 x K weights; the tracker files are the "
            "wheel's float models); --format/--quantize are not used")
    record = run.config["hands"]
    spec = FeatureSpec.from_record(record, str(Path(run.path) / "config.json"))  # before any work: one clear line
    if int(head.input_shape[-1]) != spec.dim:
        raise ToolkitError(f"{run.path}: the head reads {head.input_shape[-1]} features, config.json's hands.features "
                           f"says {spec.dim} ({spec.set}); fine-tune again")
    models = ensure_hand_models()
    for role in ("palm", "landmark"):
        if model_sha256(models, role) != record.get(f"{role}_sha256"):
            raise ToolkitError(f"{run.path}: trained on another {role} model ({record.get(f'{role}_sha256', '?')[:12]}"
                               f"...) than the one at hand ({model_sha256(models, role)[:12]}...); fine-tune again")
    splits = run.splits(config.data, config.strict)
    held = splits.test if len(splits.test) else splits.val
    if not len(held):
        raise ToolkitError(f"{run.path}: no test or validation images to validate the export on; pass --data")
    labels = run.labels
    min_side = int(record.get("min_side", min(run.image_size)))
    tracker = open_tracker(models.palm, models.landmark, threads=1, twins=getattr(models, "twins", None) or None)
    zoom_out = float(record.get("zoom_out", 0.0))
    turns = turns_of(record, str(run.path / "config.json"))  # runs from before the turned looks had none
    f = landmark_features(tracker, held, key_base=models_key(models, tracker), min_side=min_side, zoom_out=zoom_out,
                          orientation=spec.orientation, turns=turns)
    f = dataclasses.replace(f, x=head_columns(f.x, spec))  # what the head reads of the cached full vector
    from toolkit import metrics

    float_found = metrics.as_class_probs(predict_array(head, f.x[f.found], 256)) if f.found.any() else None
    reference = with_no_hand(float_found if float_found is not None else np.zeros((0, len(labels))), f.found)
    output_kind = "sigmoid" if len(labels) == 2 else "softmax"

    with staged(out) as (staging, _):
        copied = copy_hand_models(staging, models)
        hands = {**copied, "min_side": min_side, "zoom_out": zoom_out, "turns": list(turns),
                 "min_score": 0.5,
                 "feature_version": spec.record()["version"], "features": spec.record(),
                 "chain": f"image -> palm -> rotated hand crop -> landmark -> {spec.dim} features ({spec.set}, "
                          f"{spec.orientation}) -> head"}
        log(f"export {HEAD_FILE} ...")
        path = head_onnx(head, staging / HEAD_FILE, config.opset)
        data = {"spec": spec_name(config.data or run.config["train"]["data"]),
                "kind": data_kind(config.data or run.config["train"]["data"]),
                "trained_on": {"spec": spec_name(run.config["train"]["data"]),
                               "kind": data_kind(run.config["train"]["data"])},
                "validation_split": held.name, "validation_fingerprint": held.fingerprint,
                "fingerprints": splits.fingerprints(), "threshold": None, "calibration": None,
                "no_hand": {"n": int((~f.found).sum()), "files": f.missing}}
        fmt = types.SimpleNamespace(name="onnx", quantization="none")  # what file_entry reads of a format

        def manifest_with(validation: dict):
            from toolkit.export.manifest import file_entry

            entry: FileEntry = file_entry(path, fmt, validation, None, "float32")
            m = build_manifest(name=out.name, model_name="hands", labels=labels, image_size=run.image_size,
                               output_kind=output_kind, entries={HEAD_FILE: entry}, target_far=config.target_far,
                               source=provenance(run.model_file, run.path),
                               data=data, versions={**versions(), "toolkit": __version__})
            return dataclasses.replace(m, pipeline=PIPELINE, hands=hands)

        manifest_with({}).write(staging)  # a first manifest, so the door's Predictor can open the folder
        validation = validate_end_to_end(staging, f, held, reference, float_found, labels)
        if validation["head_max_abs_dprob"] > HEAD_ATOL:
            raise ToolkitError(f"{HEAD_FILE}: differs from the Keras head by {validation['head_max_abs_dprob']:.2e} "
                               f"> {HEAD_ATOL:g}: the conversion is wrong; nothing written")
        drop = validation["float_accuracy"] - validation["accuracy"]
        if drop > allowed_drop(config.max_drop, validation["n"]) + 1e-9:  # never below one image's worth
            raise ToolkitError(f"{out.name}: end-to-end accuracy {validation['accuracy']:.1f}% vs float "
                               f"{validation['float_accuracy']:.1f}% (drop {drop:.1f} > --max-drop "
                               f"{config.max_drop:g}); nothing written")
        manifest = manifest_with(validation)
        manifest.write(staging)
        (staging / "report.md").write_text(report_markdown(manifest) + f"\nNo hand found (counted wrong): "
                                           f"{validation['no_hand']} of {validation['n']} held-out images.\n")
        log(f"  {HEAD_FILE} (palm -> landmarks -> head, end to end): accuracy {validation['accuracy']:.1f}% "
            f"(float {validation['float_accuracy']:.1f}%), agreement {validation['agreement']:.1f}%, "
            f"max|dp| {validation['max_abs_dprob']:.2e}, no hand in {validation['no_hand']} of {validation['n']}")
        _publish(staging, out, config.overwrite)
    log(f"wrote {out} (serve: {manifest.serve}, pipeline: {PIPELINE})")
    return out


def validate_end_to_end(folder: Path, f, held, reference: np.ndarray, float_found, labels: tuple) -> dict:
    """The door's Predictor on ``folder`` over the held-out images against the float pipeline's rows, and the
    head file alone against the Keras head on the images with a hand."""
    from toolkit.export.validate import compare, load_runner
    from toolkit.inference.predictor import Predictor

    x_val, y = held.numpy()
    rows = Predictor(folder).run(np.asarray(x_val, np.float32))  # (N, K + 1): the last column is "no hand"
    out = compare(rows, reference, y)
    head_dp = 0.0
    if float_found is not None:
        got = np.asarray(load_runner(folder / HEAD_FILE, threads=1)(f.x[f.found]), np.float64)
        got = got.reshape(len(float_found), -1)
        got = np.concatenate([1 - got, got], axis=1) if got.shape[1] == 1 else got
        head_dp = float(np.abs(got - float_found).max())
    pred, want = rows.argmax(1), reference.argmax(1)
    return {**out, "max_abs_dprob_source": head_dp, "head_max_abs_dprob": head_dp,
            "no_hand": int(np.sum(pred == len(labels))), "float_no_hand": int(np.sum(want == len(labels))),
            "answers": [*labels, NO_HAND], "atol": HEAD_ATOL}
