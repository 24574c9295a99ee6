"""What every export records besides its files: the input size and output kind read off the model, where the door
threshold comes from, the data every figure was measured on, and the licence of a pretrained base.

Shared by the fused export (:mod:`toolkit.export.api`) and the features chain (:mod:`toolkit.export.featurechain`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.export.config import ExportConfig
from toolkit.export.manifest import provenance, spec_name
from toolkit.export.validate import choose_threshold, predict
from toolkit.inference.manifest import data_kind


def data_record(data_spec: str, trained_on: str | None, held_out, splits, threshold_source, selection, calibration,
                calibration_fp, pool, config: ExportConfig) -> dict:
    """The manifest's ``data``: what every figure in it was measured on, and where calibration came from."""
    return {
        "spec": spec_name(data_spec),
        "kind": data_kind(data_spec),  # what every figure in this manifest was measured on
        "trained_on": {"spec": spec_name(trained_on), "kind": data_kind(trained_on)},
        "validation_split": held_out.name,
        "validation_fingerprint": held_out.fingerprint,
        "fingerprints": splits.fingerprints(),
        "threshold": threshold_source,
        "selection_split": None if selection is None else selection.name,
        "calibration": None
        if calibration is None
        else {
            "n": int(len(calibration)),
            "fingerprint": calibration_fp,
            "split": pool.name if pool is not None else "train",
            "onnx_method": config.calibration_method,
            "degrade": list(config.calibration_degrade),
        },
    }

def _copy_base_licence(folder: Path, model_name: str) -> dict:
    """The licence of the pretrained base whose weights the model files hold, copied into ``folder``; its record.

    {} for a model with no third-party weights (or a model file / keras: name the registry does not know).
    """
    from toolkit.models import get_spec, list_models

    third = get_spec(model_name).third_party if model_name in list_models() else None
    if not third:
        return {}
    from toolkit.models.fetch import copy_licence

    return copy_licence(third["wheel"], folder, third["licence_file"], third["licence_name"], kind=model_name)

def _threshold_rule(run_dir: Path | None, out: Path, splits, held_out, y_held, output_kind: str, target_far: float,
                    log):
    """(choose(runner, held-out probabilities) -> the door threshold, the manifest's record of where it came from).

    FAR and FRR are always measured on ``held_out`` at the chosen threshold. The threshold is chosen, best first:
    on the run's out-of-fold scores (a cross-validated head, :mod:`toolkit.train.cvhead`: every train+val image
    scored by the fold that held it out); else on the validation split, so the rates are not measured on the
    images that chose it; else, with no separate split holding negatives, on ``held_out`` itself, as recorded.
    """
    if output_kind != "sigmoid":
        return None, None
    split, n = held_out.name, len(held_out)
    from toolkit.train.cvhead import read_oof

    oof = read_oof(run_dir)
    if oof is not None:
        chosen = choose_threshold(oof["probs"][:, -1], oof["y"], target_far)
        if split != "test":
            log(f"warning: no test split; FAR/FRR at the out-of-fold threshold are measured on the {split} split, "
                "which the cross-validated head was fitted on")
        return (lambda runner, probs: chosen["threshold"]), {
            "source": "out-of-fold cross-validation scores", "scores": provenance(oof["file"], run_dir),
            "n": int(len(oof["y"])), "folds": int(oof["fold"].max()) + 1, "threshold": chosen["threshold"],
            "negatives": chosen["negatives"], "positives": chosen["positives"], "far": chosen["far"],
            "frr": chosen["frr"], "far_upper_95": chosen["far_upper_95"],
            "far_measured_on": f"{split} split ({n} images)"}
    val = splits.val
    if held_out is not val and len(val):
        x_sel, y_sel = val.numpy()
        if np.any(np.asarray(y_sel).reshape(-1) == 0):
            x_sel = x_sel.astype(np.float32)
            def on_val(runner, probs):
                return choose_threshold(predict(runner, x_sel)[:, 0], y_sel, target_far)["threshold"]

            return on_val, {"source": f"{val.name} split", "n": int(len(y_sel)),
                            "far_measured_on": f"{split} split ({n} images)"}
    return (lambda runner, probs: choose_threshold(probs[:, 0], y_held, target_far)["threshold"]), {
        "source": f"{split} split", "n": n, "far_measured_on": f"{split} split (the same images)"}

def _input_size(model) -> tuple[int, int]:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[2] is None:
        raise ToolkitError(f"model input shape {shape} is not (batch, height, width, 3) with a fixed size")
    return int(shape[1]), int(shape[2])

def _output_kind(model, labels: tuple) -> str:
    units = int(model.output_shape[-1])
    if units == 1 and len(labels) == 2:
        return "sigmoid"
    if units == len(labels) and units > 1:
        return "softmax"
    raise ToolkitError(
        f"model has {units} output unit(s) but the data has {len(labels)} labels {list(labels)}; "
        "export with the data the model was trained on"
    )
