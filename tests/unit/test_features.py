"""The feature cache on a tiny base: keys, memory-mapped entries, atomic writes, batches, ls/clear."""

import numpy as np
import pytest

from toolkit.data.split import Split
from toolkit.train import features as F


@pytest.fixture(scope="module")
def base():
    from toolkit._keras import keras

    k = keras()
    inp = k.Input((8, 8, 3))
    x = k.layers.Conv2D(4, 3, name="conv")(inp)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    return k.Model(inp, x)


def _split(n=10, seed=0, name="train"):
    rng = np.random.default_rng(seed)
    return Split(name, ("a", "b"), rng.integers(0, 2, n), (8, 8), x=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8))


def test_key_changes_with_every_input():
    k = F.feature_key("w", "pool", (8, 8), "fp")
    others = [F.feature_key("w2", "pool", (8, 8), "fp"), F.feature_key("w", "flatten", (8, 8), "fp"),
              F.feature_key("w", "pool", (16, 16), "fp"), F.feature_key("w", "pool", (8, 8), "fp2")]
    assert k == F.feature_key("w", "pool", (8, 8), "fp") and k not in others and len(set(others)) == 4


def test_base_hash_follows_weights_not_auto_names(base):
    from toolkit._keras import keras

    h = F.base_hash(base)
    clone = keras().models.clone_model(base)  # other auto-generated names, other random weights
    clone.set_weights(base.get_weights())
    assert F.base_hash(clone) == h
    clone.set_weights([w + 1 for w in base.get_weights()])
    assert F.base_hash(clone) != h


def test_cache_writes_memmapped_entry_and_hits_it(base, tmp_path):
    split = _split(10)
    h = F.base_hash(base)
    first = F.cache_features(base, split, weights_hash=h, layer="pool", batch_size=4, root=tmp_path)
    assert not first.hit and isinstance(first.x, np.memmap) and first.x.shape == (10, 4)
    np.testing.assert_allclose(first.x, base.predict(split.numpy()[0].astype("float32"), verbose=0), atol=1e-5)
    np.testing.assert_array_equal(first.y, split.y)
    again = F.cache_features(base, split, weights_hash=h, layer="pool", root=tmp_path)
    assert again.hit and again.key == first.key
    assert [p.name for p in tmp_path.iterdir()] == [first.key]  # no temp folder left behind


def test_killed_write_leaves_nothing_trusted(base, tmp_path, monkeypatch):
    split = _split(6)
    h = F.base_hash(base)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(F, "_compute", killed)
    with pytest.raises(KeyboardInterrupt):
        F.cache_features(base, split, weights_hash=h, layer="pool", root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    # A folder without meta.json (say, a crash between files) is never read as an entry.
    (tmp_path / F.feature_key(h, "pool", (8, 8), split.fingerprint)).mkdir()
    monkeypatch.undo()
    assert not F.cache_features(base, split, weights_hash=h, layer="pool", root=tmp_path).hit


def test_feature_batches_cover_every_item_once_per_epoch(base, tmp_path):
    split = _split(10)
    f = F.cache_features(base, split, weights_hash=F.base_hash(base), layer="pool", root=tmp_path)
    ds = F.feature_batches(f, 4, shuffle=True, seed=1)
    for _ in range(2):
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
        x = np.concatenate(xs)
        assert [len(b) for b in xs] == [4, 4, 2]
        assert sorted(map(tuple, x.round(5))) == sorted(map(tuple, np.asarray(f.x).round(5)))
        assert np.array_equal(np.sort(np.concatenate(ys)), np.sort(split.y))


def test_list_and_clear(base, tmp_path):
    F.cache_features(base, _split(5), weights_hash="x", layer="pool", root=tmp_path)
    (tmp_path / ".tmp-abc-1-z").mkdir()
    rows = F.list_cache(tmp_path)
    assert sorted(r["complete"] for r in rows) == [False, True]
    done = next(r for r in rows if r["complete"])
    assert done["n"] == 5 and done["dim"] == 4 and done["bytes"] > 5 * 4 * 4
    assert F.clear_cache(tmp_path)[0] == 2 and list(tmp_path.iterdir()) == []


def test_several_cuts_and_splits_trace_each_base_once(base, tmp_path, log_lines):
    """Issue 23, defect 5: 'finetune face --feature-layer a,b,c' printed TensorFlow's "triggered tf.function
    retracing" warning twice (a trace per batch shape and per cut)."""
    from toolkit._keras import keras

    warnings = log_lines("tensorflow")
    conv = base.get_layer("conv").output
    cuts = [base, keras().Model(base.input, keras().layers.Flatten()(conv)),
            keras().Model(base.input, keras().layers.GlobalMaxPooling2D()(conv))]
    for i, cut in enumerate(cuts):
        for n, name in ((10, "train"), (3, "val"), (5, "test")):  # batch 4: last batches of 2, 3 and 1 images
            f = F.cache_features(cut, _split(n, seed=n, name=name), weights_hash=f"w{i}", layer=f"cut{i}",
                                 batch_size=4, root=tmp_path)
            if i == 0:  # the features are the model's own answers in inference mode
                np.testing.assert_allclose(f.x, cut.predict(_split(n, seed=n).numpy()[0], verbose=0), atol=1e-5)
    assert not [w for w in warnings if "retracing" in w], warnings
