"""A features export holding its base in two precisions: the door runs ``chain.base``, ``file`` picks another."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from adapt_support import make_chain_export
from onnx import numpy_helper

from toolkit.errors import ToolkitError
from toolkit.inference.manifest import load_manifest, sha256_file
from toolkit.inference.predictor import Predictor


def two_bases(folder):
    """The adapt tests' chain plus ``base_int8.onnx`` (features twice as large: easy to tell apart), served."""
    export = make_chain_export(folder)
    proto = onnx.load(str(export / "base.onnx"))
    for init in proto.graph.initializer:
        if init.name == "scale":
            init.CopyFrom(numpy_helper.from_array(np.array(32.0, np.float32), "scale"))
    onnx.save(proto, str(export / "base_int8.onnx"))
    m = load_manifest(export)
    head = m.files["head.onnx"]
    sums = {name: sha256_file(export / name) for name in ("base.onnx", "base_int8.onnx")}
    files = {"head.onnx": dataclasses.replace(head, threshold=0.7),
             "base.onnx": dataclasses.replace(head, sha256=sums["base.onnx"], threshold=0.6),
             "base_int8.onnx": dataclasses.replace(head, quantization="int8", sha256=sums["base_int8.onnx"],
                                                   threshold=0.7)}
    chain = {**m.chain, "base": "base_int8.onnx", "sha256": sums["base_int8.onnx"], "bases": sums}
    dataclasses.replace(m, files=files, chain=chain).write(export)
    return export


def test_the_door_runs_the_served_base_and_file_picks_another(tmp_path):
    export = two_bases(tmp_path / "chain")
    image = np.full((1, 64, 64, 3), 64.0, np.float32)
    served, float_base = Predictor(export), Predictor(export, "base.onnx")
    assert served.base_file == "base_int8.onnx" and float_base.base_file == "base.onnx"
    assert served.file == float_base.file == "head.onnx"  # the head a version replaces stays the serve entry
    np.testing.assert_allclose(served.chain.run(image), 2 * float_base.chain.run(image), rtol=1e-6)
    assert served.threshold == 0.7 and float_base.threshold == 0.6  # each chain's own threshold
    assert float_base.describe()["sha256"] == served.describe()["sha256"]


def test_a_changed_base_variant_is_refused_in_one_line(tmp_path):
    export = two_bases(tmp_path / "chain")
    with open(export / "base.onnx", "ab") as f:
        f.write(b"\0")
    Predictor(export)  # the served base is intact
    with pytest.raises(ToolkitError, match="sha256 does not match") as err:
        Predictor(export, "base.onnx")
    assert "\n" not in str(err.value)


def test_an_older_manifest_without_bases_still_loads(tmp_path):
    export = make_chain_export(tmp_path / "chain")
    assert "bases" not in json.loads((export / "manifest.json").read_text())["chain"]
    assert Predictor(export).base_file == "base.onnx"


def test_an_upload_for_a_features_chain_is_decoded_at_its_input_size_not_as_a_full_frame(tmp_path):
    from toolkit.runtime.uploads import working_size

    predictor = Predictor(make_chain_export(tmp_path / "chain"))
    assert working_size(predictor, 1920, 1080) == (128, 128)  # twice the 64x64 input, as a one-file export


def test_adapt_takes_the_features_of_the_base_the_door_runs(tmp_path):
    from adapt_support import write_labelled

    from toolkit.inference import versions
    from toolkit.runtime.adapt import AdaptConfig, adapt

    export = two_bases(tmp_path / "chain")
    data = write_labelled(tmp_path / "labelled", ("no_smile", "smile"), 10, cast=90.0)
    for file in (None, "base.onnx"):
        state = tmp_path / f"state-{file}"
        adapt(AdaptConfig(model=export, data=data, state=state, force=True, file=file), log=lambda s: None)
        cached = [p.name for p in (state / "adapt").glob("features-*.npz")]
        base = file or "base_int8.onnx"
        assert len(cached) == 1 and sha256_file(export / base)[:8] in cached[0]  # one cache per base variant
        p = Predictor(export, file, version=versions.version_dir(state, "v1"))
        assert p.base_file == base and p.version["id"] == "v1"
