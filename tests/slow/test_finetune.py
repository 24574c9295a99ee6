"""Fine-tuning end to end on resnet_tiny at 32x32: frozen layers, two stages, cached features, weight sources."""

import json

import numpy as np
import pytest

from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.models import build_model
from toolkit.train import features as F
from toolkit.train import runs
from toolkit.train.finetune import FinetuneConfig, finetune

pytestmark = pytest.mark.slow
DATA = "synthetic:signs?n=48&seed=1"
HEAD = "fc6"


def _config(out, weights, **kw):
    # the Keras head: with cached features and this few images --head auto would cross-validate (test_finetune_cv.py)
    base = dict(model="resnet_tiny", data=DATA, out=str(out), weights=str(weights), epochs=2, batch_size=16,
                image_size=32, patience=0, head="keras")
    return FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 'pretrained' resnet_tiny (3 classes) with random BN statistics, saved as a .keras file."""
    from toolkit._keras import keras

    k = keras()
    k.utils.set_random_seed(7)
    model = build_model("resnet_tiny", 32, 3)
    for layer in model.layers:
        if isinstance(layer, k.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights([g * rng.uniform(0.5, 1.5, g.shape), b + rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    path = tmp_path_factory.mktemp("pre") / "pretrained.keras"
    model.save(path)
    return path, {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(F.CACHE_ENV, str(tmp_path / "cache"))


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_freeze_all_keeps_body_and_batchnorm_bit_identical(pretrained, tmp_path, caplog):
    path, src = pretrained
    caplog.set_level("INFO", logger="toolkit")
    run = finetune(_config(tmp_path / "ft", path))
    assert "trainable params" in caplog.text and "non-trainable params" in caplog.text
    model = run.load_model()
    body = [la for la in model.layers if la.weights and la.name != HEAD]
    assert any(type(la).__name__ == "BatchNormalization" for la in body)
    for layer in body:  # gamma, beta and the moving mean/variance: not one bit changed
        assert _same(layer.get_weights(), src[layer.name]), layer.name
    assert model.get_layer(HEAD).get_weights()[0].shape == (128, 6)  # 3 -> 6 classes: a new head
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "model.keras", "history.csv", "metrics.json", "curves.png"} <= names
    assert "backup" not in names
    # The run folder works like a trained one: its splits come back with the recorded fingerprints.
    loaded = runs.load_run(run.path)
    assert loaded.splits().test.fingerprint == loaded.config["fingerprints"]["test"]
    assert runs.load_run_config(run.path).model == "resnet_tiny"
    assert loaded.config["frozen_layers"] == len(model.layers) - 1


def test_freeze_n_freezes_exactly_the_first_n_layers(pretrained, tmp_path):
    path, src = pretrained
    model = finetune(_config(tmp_path / "ft", path, freeze="5")).load_model()
    assert [la.name for la in model.layers[:5]][-1] == "bn_conv1"
    assert _same(model.get_layer("conv1").get_weights(), src["conv1"])
    assert _same(model.get_layer("bn_conv1").get_weights(), src["bn_conv1"])
    # Layer 6 on trains: its weights move, and a trainable BN's moving statistics follow the new data.
    assert not _same(model.get_layer("res2a_branch2a").get_weights(), src["res2a_branch2a"])
    assert not _same(model.get_layer("bn2a_branch2a").get_weights(), src["bn2a_branch2a"])


def test_freeze_beyond_the_layer_count_is_one_line(pretrained, tmp_path, capsys):
    path, _ = pretrained
    with pytest.raises(ToolkitError, match=r"--freeze 500: the model has \d+ layers"):
        finetune(_config(tmp_path / "x", path, freeze="500"))
    argv = ["finetune", "resnet_tiny", "--weights", str(path), "--data", DATA, "--out", str(tmp_path / "y"),
            "--image-size", "32", "--freeze", "500"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --freeze 500") and "\n" not in err
    assert not (tmp_path / "y").exists()


def test_two_stages_continue_epochs_and_keep_batchnorm(pretrained, tmp_path):
    path, src = pretrained
    run = finetune(_config(tmp_path / "ft", path, epochs=1, unfreeze_at=10, fine_tune_epochs=2, fine_tune_lr=1e-4))
    assert [int(r["epoch"]) for r in runs.read_history(run.path)] == [0, 1, 2]
    model = run.load_model()
    assert _same(model.get_layer("bn3a_branch2a").get_weights(), src["bn3a_branch2a"])  # BN stays frozen
    late = [la for la in model.layers[10:] if type(la).__name__ == "Conv2D"]
    assert any(not _same(la.get_weights(), src[la.name]) for la in late)  # stage 2 moved unfrozen layers
    assert _same(model.get_layer("conv1").get_weights(), src["conv1"])


def test_cached_features_head_assembles_into_one_flat_model(pretrained, tmp_path, monkeypatch, caplog):
    from toolkit._keras import keras

    path, src = pretrained
    caplog.set_level("INFO", logger="toolkit")
    run = finetune(_config(tmp_path / "a", path, cache_features=True, epochs=3))
    assert "feature caching took" in caplog.text
    model = run.load_model()
    assert not any(isinstance(la, keras().Model) for la in model.layers)  # flat: tfmot and export need it
    x, _ = run.splits().test.numpy()
    head = runs.load_keras_model(run.path / "head.keras")
    base = F.base_model(model, "avg_pool")
    np.testing.assert_allclose(model.predict(x.astype("float32"), verbose=0),
                               head.predict(base.predict(x.astype("float32"), verbose=0), verbose=0), atol=1e-5)
    assert _same(model.get_layer("bn4a_branch1").get_weights(), src["bn4a_branch1"])
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["n"] == len(x) and 0 <= metrics["accuracy"] <= 1

    # A second run on the same inputs reads every split from the cache: the base never runs.
    def no_base(*a, **k):
        raise AssertionError("the base ran although the features were cached")

    monkeypatch.setattr(F, "_compute", no_base)
    caplog.clear()
    finetune(_config(tmp_path / "b", path, cache_features=True, epochs=1))
    assert "no base computation at all" in caplog.text


def test_feature_layer_cuts_the_base_and_both_paths_agree(pretrained, tmp_path, caplog):
    """--feature-layer: the base ends at a stage's output, flattened; the cached head and images agree."""
    path, src = pretrained
    caplog.set_level("INFO", logger="toolkit")
    cached = finetune(_config(tmp_path / "c", path, cache_features=True, feature_layer="res3a_out", epochs=2))
    frozen = finetune(_config(tmp_path / "f", path, feature_layer="res3a_out", epochs=2))
    assert "cut at res3a_out" in caplog.text
    for run in (cached, frozen):
        model = run.load_model()
        names = [la.name for la in model.layers]
        assert names[-3:] == ["res3a_out_flat", "res3a_out_norm", HEAD]
        assert "res4a_out" not in names and "avg_pool" not in names
        assert _same(model.get_layer("bn3a_branch2c").get_weights(), src["bn3a_branch2c"])  # the base stays frozen
    model = cached.load_model()
    x, _ = cached.splits().test.numpy()
    head = runs.load_keras_model(cached.path / "head.keras")
    base = F.base_model(model, "res3a_out_flat")
    np.testing.assert_allclose(model.predict(x.astype("float32"), verbose=0),
                               head.predict(base.predict(x.astype("float32"), verbose=0), verbose=0), atol=1e-5)
    assert json.loads((cached.path / "features.json").read_text())["layer"] == "res3a_out_flat"


def test_unknown_feature_layer_is_one_line_with_examples(pretrained, tmp_path, capsys):
    path, _ = pretrained
    argv = ["finetune", "resnet_tiny", "--weights", str(path), "--data", DATA, "--out", str(tmp_path / "y"),
            "--image-size", "32", "--feature-layer", "fc6"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--feature-layer fc6: not a layer of" in err[0] and "res2a_out" in err[0]
    assert not (tmp_path / "y").exists()


def test_cache_entries_are_atomic_and_cli_lists_and_clears(pretrained, tmp_path, capsys):
    path, _ = pretrained
    finetune(_config(tmp_path / "a", path, cache_features=True, epochs=1))
    root = F.cache_root()
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 3 and all((p / "meta.json").is_file() for p in entries)  # train, val, test
    (root / ".tmp-deadbeef-1-x").mkdir()  # what a killed run leaves: never trusted, listed as unfinished
    assert main(["cache", "ls"]) == 0
    out = capsys.readouterr().out
    assert "4 entries" in out and "unfinished" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 4 entries" in capsys.readouterr().out
    assert list(root.iterdir()) == []


def test_run_folder_as_weights_transfers_happy_to_a_new_task(tmp_path):
    from toolkit.config import TrainConfig
    from toolkit.train.fit import train

    pre = train(TrainConfig(model="happy", data="synthetic:signs?n=36&seed=2", out=str(tmp_path / "pre"), epochs=1,
                            batch_size=16, image_size=32, patience=0))
    run = finetune(FinetuneConfig(model="happy", data="synthetic:happy?n=36&seed=3", out=str(tmp_path / "ft"),
                                  weights=str(pre.path), epochs=1, batch_size=16, image_size=32, patience=0))
    a, b = pre.load_model(), run.load_model()
    assert _same(a.get_layer("conv0").get_weights(), b.get_layer("conv0").get_weights())
    assert a.get_layer("fc").output_shape[-1] == 6 and b.get_layer("fc").output_shape[-1] == 1  # 6 -> 2 classes
    with pytest.raises(ToolkitError, match="a happy run; its weights do not fit resnet_tiny"):
        finetune(_config(tmp_path / "x", pre.path))


def test_imagenet_weights_offline_say_what_to_download(tmp_path, monkeypatch):
    import urllib.request
    from urllib.error import URLError

    def offline(*a, **k):
        raise URLError("no network")

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(ToolkitError) as info:
        finetune(FinetuneConfig(model="resnet50", data=DATA, out=str(tmp_path / "x")))
    msg = str(info.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg and ".keras/models" in msg
    assert "--weights PATH" in msg and "\n" not in msg
    assert not (tmp_path / "x").exists()


def test_imagenet_layout_weights_imply_imagenet_preprocessing(tmp_path, monkeypatch):
    from toolkit._keras import keras
    from toolkit.train import finetune as ft

    file = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ref = keras().applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    ref.save_weights(str(file))
    monkeypatch.setattr(ft, "imagenet_weights_file", lambda: file)
    run = finetune(FinetuneConfig(model="resnet50", data="synthetic:signs?n=24&seed=1", out=str(tmp_path / "ft"),
                                  cache_features=True, epochs=1, image_size=32, patience=0, val=0.25, test=0.25))
    assert run.config["train"]["model_kwargs"] == {"preprocess": "imagenet", "stem": "keras"}
    model = run.load_model()
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0],
                                  ref.get_layer("conv1_conv").get_weights()[0][:, :, ::-1, :])  # BGR -> RGB
    assert model.get_layer("fc6").get_weights()[0].shape == (2048, 6)


def test_resume_inside_stage_two_keeps_stage_one(pretrained, tmp_path):
    from toolkit._keras import keras

    path, _ = pretrained
    cfg = _config(tmp_path / "r", path, epochs=1, unfreeze_at=10, fine_tune_epochs=2, fine_tune_lr=1e-4)

    class Interrupt(keras().callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    real_fit = keras().Model.fit

    def fit_with_interrupt(self, *a, callbacks=None, **kw):
        return real_fit(self, *a, callbacks=[*callbacks, Interrupt()], **kw)

    keras().Model.fit = fit_with_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg)
    finally:
        keras().Model.fit = real_fit
    assert [int(r["epoch"]) for r in runs.read_history(cfg.out)] == [0, 1]
    with pytest.raises(ToolkitError, match="--resume must use the run's own settings"):
        finetune(FinetuneConfig(**{**cfg.to_dict(), "augment": (), "resume": True, "fine_tune_lr": 0.1}))
    finetune(FinetuneConfig(**{**cfg.to_dict(), "augment": (), "resume": True}))
    assert [int(r["epoch"]) for r in runs.read_history(cfg.out)] == [0, 1, 2]
    assert not (tmp_path / "r" / "backup").exists()


def test_speed_benchmark_runs_end_to_end_on_tiny_inputs(pretrained, tmp_path):
    from benchmarks.transfer import format_speed, speed_benchmark

    path, _ = pretrained
    r = speed_benchmark("resnet_tiny", str(path), DATA, image_size=32, epochs=2, batch_size=16, out=tmp_path / "s")
    text = format_speed(r)
    assert r["speedup"] > 0 and r["cache_s"] > 0 and "one-time feature caching" in text
    assert len(r["cached_epoch_s"]) == len(r["frozen_epoch_s"]) == 2
