"""The cluster of a multi-worker run, the batch plan and their one-line errors (no TensorFlow needed)."""

import json

import pytest

from toolkit.cli import main
from toolkit.config import TrainConfig, same_run
from toolkit.errors import ToolkitError
from toolkit.train.cluster import cluster_error_message, read_tf_config, resolve_cluster
from toolkit.train.distribute import LOCAL, plan_batch

TWO = {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}


def test_workers_and_index_make_the_cluster():
    c = resolve_cluster("10.0.0.1:2222, 10.0.0.2:2222", 1, env={})
    assert (c.index, c.size, c.is_chief, c.address, c.source) == (1, 2, False, "10.0.0.2:2222", "--workers")
    assert resolve_cluster(("a:1", "b:2"), 0, env={}).is_chief


def test_tf_config_with_a_chief_counts_the_chief_as_worker_0():
    c = read_tf_config(json.dumps({"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]},
                                   "task": {"type": "worker", "index": 1}}))
    assert [a for *_, a in c.tasks] == ["c:1", "w:1", "w:2"] and c.index == 2 and not c.is_chief
    assert c.name("chief", 0) == "the chief (c:1)" and c.name("worker", 0) == "worker 1 (w:1)"
    assert resolve_cluster((), None, env={"TF_CONFIG": json.dumps(TWO)}).address == "10.0.0.2:2222"


@pytest.mark.parametrize("text, message", [
    ("{not json", "TF_CONFIG: not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG: no "cluster"'),
    (json.dumps({"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}),
     "job 'ps' belongs to another strategy"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:1"]}}), 'TF_CONFIG: no "task"'),
    (json.dumps({**TWO, "task": {"type": "worker", "index": 2}}), "task index 2 is outside the 2 worker"),
    (json.dumps({**TWO, "task": {"type": "chief", "index": 0}}), "task type 'chief' is not a job"),
    (json.dumps({"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}), "listed twice"),
    (json.dumps({"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}), "'a' is not host:port"),
    (json.dumps({"cluster": {"chief": ["a:1", "b:1"], "worker": ["c:1"]}, "task": {"type": "chief", "index": 0}}),
     "2 chiefs"),
])
def test_bad_tf_config_is_one_clear_line(text, message):
    with pytest.raises(ToolkitError) as err:
        read_tf_config(text)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("workers, index, env, message", [
    ("a:1,b:1", None, {}, "also pass --worker-index (0..1)"),
    ("a:1,b:1", 2, {}, "--worker-index 2: outside the 2 --workers"),
    ((), 0, {}, "--worker-index needs --workers"),
    ((), None, {}, "multiworker: no cluster"),
    ("a:1,b:99999", 0, {}, "'b:99999' is not host:port"),
    ("10.0.0.1:2222,10.0.0.2:2222", 0, {"TF_CONFIG": json.dumps(TWO)}, "TF_CONFIG describes another cluster"),
])
def test_cluster_mistakes(workers, index, env, message):
    with pytest.raises(ToolkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_cluster(workers, index, env=env)


def test_agreeing_tf_config_and_workers_are_fine():
    c = resolve_cluster("10.0.0.1:2222,10.0.0.2:2222", 1, env={"TF_CONFIG": json.dumps(TWO)})
    assert c.source == "--workers" and c.index == 1


def test_cluster_errors_name_the_peer_and_the_timeout():
    chief = resolve_cluster("h0:1,h1:2,h2:3", 0, env={})
    tf_text = "Barrier timed out ...\nSome timed out task names:\n/job:worker/replica:0/task:2\n"
    msg = cluster_error_message(chief, tf_text, 30, starting=True)
    assert msg.startswith("multiworker: worker 2 (h2:3) did not join within 30 s (this is h0:1)") and "\n" not in msg
    worker = resolve_cluster("h0:1,h1:2", 1, env={})
    msg = cluster_error_message(worker, "Deadline Exceeded", 5, starting=True)
    assert "the chief (h0:1) did not answer (is it running?) within 5 s" in msg
    msg = cluster_error_message(chief, "tasks are unhealthy:\n/job:worker/replica:0/task:1\n", 30, starting=False)
    assert "lost contact with worker 1 (h1:2) during training" in msg and "--resume" in msg
    msg = cluster_error_message(worker, "Could not start gRPC server", 5, starting=True)
    assert msg.startswith("multiworker: cannot listen on h1:2, this worker's own address in --workers: its port")


def test_batch_plan_is_explicit():
    plan = plan_batch(32, 0.001, 2, False)
    assert (plan.global_batch, plan.per_replica, plan.lr) == (32, 16, 0.001)
    assert plan.describe().startswith("global batch 32 = 2 replica(s) x 16; learning rate 0.001 (as given")
    scaled = plan_batch(32, 0.001, 4, True)
    assert (scaled.global_batch, scaled.per_replica, scaled.lr) == (128, 32, 0.004)
    assert "--lr x 4 (linear scaling)" in scaled.describe()
    assert "about 10.7" in plan_batch(32, 0.1, 3, False).describe()
    with pytest.raises(ToolkitError, match="smaller than the 4 replicas"):
        plan_batch(2, 0.1, 4, False)


def test_one_device_needs_no_tensorflow():
    assert LOCAL.chief_says(3.5) == 3.5 and LOCAL.all_agree(True) and LOCAL.exchange(2.0).tolist() == [2.0]
    assert LOCAL.workers == 1 and LOCAL.replicas == 1 and LOCAL.is_chief


def test_resume_may_change_where_a_run_trains_but_not_what_it_computes():
    saved = TrainConfig(model="happy", data="d", out="o", workers=("a:1", "b:1"), worker_index=0).to_dict()
    moved = TrainConfig(model="happy", data="d", out="o", workers=("c:1", "d:1"), worker_index=0, resume=True,
                        connect_timeout=5.0).to_dict()
    assert same_run(saved, moved) is None
    assert same_run(saved, {**moved, "scale_batch": True}) == "scale_batch=True (run: False)"
    assert TrainConfig.from_dict(saved).workers == ("a:1", "b:1")
    with pytest.raises(ToolkitError, match="strategy: must be one of"):
        TrainConfig(model="happy", data="d", out="o", strategy="tpu")


def _train_cli(tmp_path, *extra):
    return main(["train", "happy", "--data", "synthetic:happy?n=20", "--out", str(tmp_path / "run"), *extra])


@pytest.mark.parametrize("tf_config, extra, message", [
    ("{bad", ["--strategy", "multiworker"], "error: TF_CONFIG: not valid JSON"),
    (json.dumps(TWO), ["--strategy", "multiworker", "--workers", "10.0.0.9:1,10.0.0.2:2222", "--worker-index", "1"],
     "error: TF_CONFIG describes another cluster"),
    ("", ["--strategy", "one", "--workers", "a:1,b:1", "--worker-index", "0"],
     "error: --workers/--worker-index are for --strategy multiworker, not one"),
])
def test_cli_cluster_errors_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, tf_config, extra, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert _train_cli(tmp_path, *extra) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(message) and captured.err.count("\n") == 1
    assert not (tmp_path / "run").exists()
