"""The linear head file of every adaptable chain: Keras head layers folded into it, written as ONNX, read back."""

import numpy as np
import onnxruntime as ort
import pytest

from toolkit.export.linearhead import HeadFile, fold_keras_head, write_head_onnx


def _head(classes: int, hidden: bool = False, norm: bool = True):
    from toolkit._keras import keras

    k = keras()
    k.utils.set_random_seed(1)
    inp = k.Input((6,), name="features")
    x = k.layers.Dropout(0.3)(inp)
    if norm:
        x = k.layers.BatchNormalization(name="norm")(x)
    if hidden:
        x = k.layers.Dense(4, activation="relu", name="hidden")(x)
    out = k.layers.Dense(1 if classes == 2 else classes, activation="sigmoid" if classes == 2 else "softmax",
                         name="out")(x)
    model = k.Model(inp, out)
    if norm:  # statistics and an affine part that are not the identity, as after training
        rng = np.random.default_rng(0)
        model.get_layer("norm").set_weights([rng.uniform(0.5, 2, 6), rng.normal(0, 1, 6), rng.normal(3, 1, 6),
                                             rng.uniform(0.5, 4, 6)])
    return model


@pytest.mark.parametrize("classes,norm", [(2, True), (4, True), (3, False)])
def test_folded_head_file_reproduces_the_keras_head(tmp_path, classes, norm):
    model = _head(classes, norm=norm)
    head, why = fold_keras_head(model.layers[1:])
    assert head is not None, why
    x = np.random.default_rng(2).normal(3, 2, (20, 6)).astype(np.float32)
    want = model.predict(x, verbose=0)
    assert np.abs(head.predict(x) - want).max() < 1e-5
    path = write_head_onnx(head, tmp_path / "head.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]
    got = session.run(None, {"features": x})[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
    import onnx
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    assert np.allclose(weights["mean"], head.mean, atol=1e-6)  # the standardiser stays as fitted (unfolded)
    assert [n.op_type for n in onnx.load(str(path)).graph.node][-1] == ("Sigmoid" if classes == 2 else "Softmax")


def test_a_head_with_a_hidden_layer_is_not_a_linear_head():
    head, why = fold_keras_head(_head(2, hidden=True).layers[1:])
    assert head is None and "'hidden'" in why and "\n" not in why


def test_head_file_softmax_rows_sum_to_one():
    head = HeadFile(np.zeros(3), np.ones(3), 0.0, np.eye(3), np.zeros(3))
    p = head.predict(np.eye(3) * 5)
    assert np.allclose(p.sum(axis=1), 1) and (p.argmax(axis=1) == [0, 1, 2]).all()
