"""SIGKILL ``toolkit train``, ``export``, ``pipeline run`` and feature caching, then resume or re-run.

Short versions of ``python -m benchmarks.selftest --only interrupt`` (which kills five trainings and more points).
Each kill is a real SIGKILL of a real child process.
"""

import random

import pytest

from benchmarks.interrupt import cache_kills, export_kills, pipeline_kills, train_kills

pytestmark = pytest.mark.slow
def test_training_killed_mid_epoch_and_while_finishing_resumes_to_the_uninterrupted_result(seed, tmp_path, announce,
                                                                                           tiny_run):
    # During epoch 2 of 2, then while finishing (model saved, plots and metrics being written): a kill there
    # used to make --resume train every epoch again. The reference is the same run, uninterrupted.
    result = train_kills(tmp_path, kills=2, epochs=2, rng=random.Random(seed), phases=(2, 3), log=lambda m: None,
                         reference=tiny_run)
    for k in result["kills"]:
        announce(f"seed {seed}: train killed at {k['where']}: epochs reported {k['reported']}, durable "
                 f"{k['durable']}, resumed from {k['resumed_from']}, same result {k['same_history']}")
        assert k["resume_rc"] == 0, k["resume_error"]
        assert k["resumed_from"] == k["durable"]  # the last complete checkpoint, nothing older
        assert k["lost_beyond_in_flight"] == 0
        assert k["same_history"] and k["same_metrics"], "a resumed run must match the uninterrupted one exactly"
        assert k["leftovers"] == []  # no resume state or temporary model files left in the finished run
    assert len(result["kills"]) == 2


def test_export_killed_mid_write_leaves_no_partial_folder_and_the_rerun_completes(seed, tmp_path, announce, tiny_run):
    result = export_kills(tmp_path, tiny_run, points=1, rng=random.Random(seed), log=lambda m: None)
    k = result["kills"][0]
    announce(f"seed {seed}: export killed at line event {k['at']}/{result['events']}: folder "
             f"{k['after_kill']}, re-run ok {k['rerun_ok']}")
    assert k["killed"]
    assert k["after_kill"] in ("absent", "complete")
    assert k["rerun_ok"] and k["staging_after_rerun"] == []


def test_pipeline_killed_mid_run_trusts_nothing_broken_and_finishes(seed, tmp_path, announce):
    result = pipeline_kills(tmp_path, points=1, rng=random.Random(seed), log=lambda m: None)
    k = result["kills"][0]
    announce(f"seed {seed}: pipeline killed at line event {k['at']}/{result['events']}; "
             f"re-run rc {k['rerun_rc']}")
    assert k["killed"]
    assert k["trusted_but_broken"] == []  # state.json never records a step whose output is incomplete
    assert k["rerun_rc"] == 0 and k["complete"], k["rerun_error"]
    assert k["steps_skipped_next"] == 3, k["next_error"]  # train, export, benchmark: nothing stale or redone
    assert k["staging_left"] == []


def test_feature_caching_killed_leaves_no_entry_a_later_run_would_trust_wrongly(seed, tmp_path, announce, tiny_run):
    result = cache_kills(tmp_path, tiny_run, points=1, rng=random.Random(seed), log=lambda m: None)
    k = result["kills"][0]
    announce(f"seed {seed}: caching killed at line event {k['at']}/{result['events']}: trusted entries "
             f"{k['trusted']}, unfinished {k['untrusted_tmp']}")
    assert k["killed"]
    assert k["trusted_but_wrong"] == 0
    assert k["rerun_rc"] == 0, k["rerun_error"]
    assert k["wrong_after_rerun"] == 0 and k["entries_after_rerun"] == 3  # train, val, test features
    assert k["tmp_after_rerun"] == 0  # the killed run's unfinished entry was cleaned up
