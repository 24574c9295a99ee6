"""The cluster of a multi-worker run: from ``--workers``/``--worker-index`` or ``TF_CONFIG``, checked.

Pure Python (no TensorFlow), so a bad cluster is reported before anything heavy starts. Worker indices
in messages count the chief as 0, then the workers in order; with ``--workers`` that is the list's order.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from toolkit.errors import ToolkitError

TF_CONFIG = "TF_CONFIG"
JOBS = ("chief", "worker")  # MultiWorkerMirroredStrategy's jobs; "ps" and "evaluator" belong to other strategies
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}'


@dataclass(frozen=True)
class Cluster:
    """The machines of a multi-worker run, as TensorFlow's ClusterSpec sees them, and this process's task."""

    jobs: dict  # "chief"/"worker" -> tuple of host:port
    task_type: str
    task_index: int
    source: str  # "--workers" or "TF_CONFIG": named in error messages

    @property
    def tasks(self) -> list[tuple[str, int, str]]:
        """Every task as (job, index, address), the chief first: the order of worker indices in messages."""
        return [(job, i, addr) for job in JOBS for i, addr in enumerate(self.jobs.get(job, ()))]

    @property
    def index(self) -> int:
        """This process's place in :attr:`tasks` (0 is the chief)."""
        return [(j, i) for j, i, _ in self.tasks].index((self.task_type, self.task_index))

    @property
    def size(self) -> int:
        return len(self.tasks)

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def address(self) -> str:
        return self.tasks[self.index][2]

    def name(self, job: str, index: int) -> str:
        """'worker 1 (10.0.0.2:2222)' for a TensorFlow task."""
        place = [(j, i) for j, i, _ in self.tasks].index((job, index))
        addr = self.tasks[place][2]
        return f"the chief ({addr})" if place == 0 else f"worker {place} ({addr})"


def parse_workers(text: str | tuple | list) -> tuple[str, ...]:
    """'a:1,b:2' (or a sequence) -> ('a:1', 'b:2'), every entry checked as host:port."""
    items = [w.strip() for w in (text.split(",") if isinstance(text, str) else text) if str(w).strip()]
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ToolkitError(f"--workers: {item!r} is not host:port (e.g. 10.0.0.2:2222)")
    if len(set(items)) != len(items):
        dup = next(w for w in items if items.count(w) > 1)
        raise ToolkitError(f"--workers: {dup} is listed twice; give every worker its own host:port")
    return tuple(items)


def read_tf_config(text: str) -> Cluster:
    """Parse and check ``TF_CONFIG``; every problem is one line that says what to write instead.

    Raises:
        ToolkitError: not JSON, no cluster or task, a job MultiWorkerMirroredStrategy does not use,
            a task that is not in the cluster, or a malformed address.
    """
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"TF_CONFIG: not valid JSON ({exc.msg} at character {exc.pos}); "
                           f"expected e.g. {TF_CONFIG_EXAMPLE}") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("cluster"), dict) or not cfg["cluster"]:
        raise ToolkitError(f'TF_CONFIG: no "cluster" table of jobs; expected e.g. {TF_CONFIG_EXAMPLE}')
    cluster, task = cfg["cluster"], cfg.get("task")
    other = sorted(set(cluster) - set(JOBS))
    if other:
        raise ToolkitError(f"TF_CONFIG: job {other[0]!r} belongs to another strategy (parameter-server training); "
                           "multiworker uses 'worker' and an optional single 'chief'")
    jobs = {}
    for job, addrs in cluster.items():
        if not isinstance(addrs, list) or not addrs:
            raise ToolkitError(f'TF_CONFIG: cluster["{job}"] must be a non-empty list of "host:port" strings')
        try:
            jobs[job] = parse_workers(addrs)
        except ToolkitError as exc:
            raise ToolkitError(f'TF_CONFIG: cluster["{job}"]: {str(exc).removeprefix("--workers: ")}') from None
    if len(jobs.get("chief", ())) > 1:
        raise ToolkitError(f"TF_CONFIG: {len(jobs['chief'])} chiefs; a cluster has at most one 'chief' task")
    everyone = [a for addrs in jobs.values() for a in addrs]
    if len(set(everyone)) != len(everyone):
        raise ToolkitError("TF_CONFIG: an address appears in two jobs; every task needs its own host:port")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ToolkitError('TF_CONFIG: no "task" with "type" and "index"; this process\'s own place, e.g. '
                           '"task": {"type": "worker", "index": 1}')
    ttype, tindex = task["type"], task["index"]
    if ttype not in jobs:
        raise ToolkitError(f"TF_CONFIG: task type {ttype!r} is not a job of the cluster ({', '.join(jobs)})")
    if not isinstance(tindex, int) or isinstance(tindex, bool) or not 0 <= tindex < len(jobs[ttype]):
        raise ToolkitError(f"TF_CONFIG: task index {tindex!r} is outside the {len(jobs[ttype])} {ttype} "
                           f"address(es); give 0..{len(jobs[ttype]) - 1}")
    return Cluster(jobs, ttype, tindex, "TF_CONFIG")


def resolve_cluster(workers: tuple | str = (), worker_index: int | None = None,
                    env: Mapping[str, str] | None = None) -> Cluster:
    """The cluster from ``--workers``/``--worker-index``, else from ``TF_CONFIG``; both given must agree.

    Raises:
        ToolkitError: neither given, an index without a list (or the reverse), an index out of range, a bad
            TF_CONFIG, or a TF_CONFIG that describes another cluster than ``--workers``.
    """
    env = os.environ if env is None else env
    from_env = read_tf_config(env[TF_CONFIG]) if env.get(TF_CONFIG) else None
    if not workers:
        if worker_index is not None:
            raise ToolkitError("--worker-index needs --workers host:port,... (the same list on every worker)")
        if from_env is None:
            raise ToolkitError("multiworker: no cluster; pass --workers host:port,... --worker-index i "
                               f"(the same list on every worker, the chief first) or set TF_CONFIG, e.g. "
                               f"{TF_CONFIG_EXAMPLE}")
        return from_env
    addrs = parse_workers(workers)
    if worker_index is None:
        raise ToolkitError(f"--workers: also pass --worker-index (0..{len(addrs) - 1}): this process's place "
                           "in the list; 0 is the chief")
    if not 0 <= worker_index < len(addrs):
        raise ToolkitError(f"--worker-index {worker_index}: outside the {len(addrs)} --workers; "
                           f"give 0..{len(addrs) - 1}")
    cluster = Cluster({"worker": addrs}, "worker", worker_index, "--workers")
    if from_env is not None and ([a for *_, a in from_env.tasks], from_env.index) != (list(addrs), worker_index):
        raise ToolkitError(f"TF_CONFIG describes another cluster (task {from_env.index} of "
                           f"{','.join(a for *_, a in from_env.tasks)}) than --workers/--worker-index "
                           f"(task {worker_index} of {','.join(addrs)}); unset TF_CONFIG or drop --workers")
    return cluster


_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def cluster_error_message(cluster: Cluster, text: str, timeout: float, *, starting: bool) -> str:
    """One line for a failed start or a lost peer, naming the peers by index and address.

    Args:
        cluster: this process's cluster.
        text: TensorFlow's error message (its task names, /job:worker/replica:0/task:1, say who failed).
        timeout: the --connect-timeout in force.
        starting: True while the cluster was coming up, False once training had started.
    """
    if "Could not start gRPC server" in text:
        return (f"multiworker: cannot listen on {cluster.address}, this worker's own address in {cluster.source}: "
                "its port is taken (an earlier worker still running?); stop that process or give another port")
    me = (cluster.task_type, cluster.task_index)
    known = {(j, i) for j, i, _ in cluster.tasks}
    names: list[str] = []
    for job, idx in _TASK.findall(text):
        task = (job, int(idx))
        if task in known and task != me and cluster.name(*task) not in names:
            names.append(cluster.name(*task))
    if starting:
        if not cluster.is_chief:  # while the cluster starts, a worker talks only to the chief
            who = f"{cluster.name(*cluster.tasks[0][:2])} did not answer (is it running?)"
        else:
            who = " and ".join(names or [cluster.name(j, i) for j, i, _ in cluster.tasks[1:]]) + " did not join"
        return (f"multiworker: {who} within {timeout:g} s (this is {cluster.address}); start every worker with "
                f"the same {cluster.source} and its own index, check the addresses and firewalls, or raise "
                "--connect-timeout")
    lost = " and ".join(names) if names else "a peer (TensorFlow did not say which)"
    return (f"multiworker: lost contact with {lost} during training; restart every worker with --resume to "
            "continue from the last finished epoch")
