"""benchmarks.fewshot: the test photos are the same for every run and never sampled for training."""

from benchmarks.fewshot import _files, sample, split_pool


def test_test_set_is_fixed_stratified_and_disjoint_from_every_training_sample(tmp_path):
    for label, n in (("no_smile", 70), ("smile", 30)):
        (tmp_path / label).mkdir()
        for i in range(n):
            (tmp_path / label / f"{i}.jpg").write_bytes(b"x")
    files = _files(tmp_path)
    test, pool = split_pool(files, 20)
    assert {k: len(v) for k, v in test.items()} == {"no_smile": 14, "smile": 6}
    assert split_pool(files, 20)[0] == test  # the same test photos every time
    held_out = {f for fs in test.values() for f in fs}
    for seed in (1, 2, 3):
        train = sample(pool, 20, seed)
        chosen = {f for fs in train.values() for f in fs}
        assert len(chosen) == 20 and not chosen & held_out
        assert {k: len(v) for k, v in train.items()} == {"no_smile": 14, "smile": 6}
