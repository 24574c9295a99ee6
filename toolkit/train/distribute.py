"""Where training runs: one device, every local GPU, or several machines, all on tf.distribute.

``--strategy`` picks the engine; nothing here is home-made but the checks around it:

- ``one``: TensorFlow's default strategy (one device), exactly what plain Keras does.
- ``mirrored``: ``MirroredStrategy``, one replica per local GPU, gradients all-reduced.
- ``multiworker``: ``MultiWorkerMirroredStrategy``; the cluster comes from ``--workers host:port,...
  --worker-index i`` or from ``TF_CONFIG``. Worker 0 (or the ``chief`` task) is the chief: only it
  writes the run folder. The others write their part of TensorFlow's collective saves into a private
  folder (see :func:`worker_dir`) that holds their resume state and is removed when the run ends.
- ``auto``: ``mirrored`` when more than one GPU is visible, ``multiworker`` when ``--workers`` is
  given, else ``one``.

Start-up is bounded: TensorFlow's coordination service is configured here with a registration barrier
and ``--connect-timeout``, so a worker whose peers never come up fails with their addresses instead
of waiting forever (TensorFlow's default).

Decisions that depend on files (is there a best checkpoint? a cached feature entry?) must be the same
on every worker, or the workers' collective operations stop matching and training hangs. They go
through :meth:`Distribution.exchange`, an all-reduce that shows each worker every worker's value.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.config import STRATEGIES
from toolkit.errors import ToolkitError
from toolkit.train.cluster import JOBS, TF_CONFIG, Cluster, cluster_error_message, resolve_cluster

log = logging.getLogger("toolkit.train")
WORKER_STATE_ENV = "TOOLKIT_WORKER_STATE"


@dataclass
class Distribution:
    """The strategy a run trains under, and this process's role in it."""

    strategy: object
    name: str  # the resolved strategy: one, mirrored or multiworker
    cluster: Cluster | None = None
    connect_timeout: float = 0.0

    @property
    def multiworker(self) -> bool:
        return self.cluster is not None

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    @property
    def workers(self) -> int:
        return self.cluster.size if self.cluster else 1

    @property
    def index(self) -> int:
        return self.cluster.index if self.cluster else 0

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync) if self.strategy is not None else 1

    def scope(self):
        """Build and compile models inside this: their variables are created by the strategy."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self) -> str:
        if self.cluster is None:
            return f"strategy {self.name}: {self.replicas} replica(s) on this machine"
        role = "chief" if self.is_chief else f"worker {self.index}"
        return (f"strategy multiworker: {role} of {self.workers} at {self.cluster.address} "
                f"(from {self.cluster.source}), {self.replicas} replica(s) in all")

    def exchange(self, value) -> np.ndarray:
        """Every worker's ``value`` (same shape everywhere), stacked in worker order: (workers, *shape).

        An all-reduce (SUM) of zero arrays that hold each worker's value in its own row; every worker
        must call it at the same point. Without multiworker it is just ``value[None]``.
        """
        value = np.asarray(value)
        value = value.astype(np.float32 if value.dtype == np.float32 else np.float64)  # exact for ints below 2**53
        if not self.multiworker:
            return value[None]
        from toolkit._keras import tf

        t = tf()
        rows = np.zeros((self.workers, *value.shape), value.dtype)
        rows[self.index] = value
        per_worker = self.replicas // self.workers
        zeros = np.zeros_like(rows)

        def local(ctx):  # the first replica of each worker contributes; the others (more GPUs) add zeros
            return t.constant(rows if ctx.replica_id_in_sync_group % per_worker == 0 else zeros)

        values = self.strategy.experimental_distribute_values_from_function(local)
        return self.strategy.reduce("SUM", values, axis=None).numpy()

    def chief_says(self, value):
        """The chief's ``value`` on every worker (a float or bool, as given)."""
        if not self.multiworker:
            return value
        got = self.exchange(float(value))[0]
        return type(value)(got) if isinstance(value, (bool, int)) else float(got)

    def all_agree(self, flag: bool) -> bool:
        """True when ``flag`` is true on every worker."""
        return bool(self.exchange(float(flag)).min() > 0) if self.multiworker else flag

    def finish(self) -> None:
        """Wait until every worker got here: the others until the chief has written the whole run folder.

        A worker that exits while the chief still evaluates would show up in the chief's log as a crashed
        task; waiting here lets the cluster finish together.
        """
        if not self.multiworker:
            return
        global _barriers
        _barriers += 1
        with translate_errors(self):
            _eager_context().wait_at_barrier(f"toolkit-finish-{_barriers}", 24 * 3600 * 1000)


LOCAL = Distribution(None, "one")  # plain Keras on one device, without touching TensorFlow
_barriers = 0
_cache: dict = {}


def is_chief(strategy: str, workers: tuple | str = (), worker_index: int | None = None) -> bool:
    """Whether this process writes the run folder, known before any connection is made.

    Raises:
        ToolkitError: a bad cluster (see :func:`resolve_cluster`).
    """
    if strategy == "multiworker" or (strategy == "auto" and workers):
        return resolve_cluster(workers, worker_index).is_chief
    return True


def quiet_native_log(strategy: str, workers: tuple | str = ()) -> None:
    """Under multiworker, keep TensorFlow's native error log (many lines of gRPC detail per cluster event)
    off the console: cluster failures come back as one-line errors. Effective before TensorFlow is
    imported; level 2 (the toolkit's default, and a common setting) becomes 3, while 0 or 1 (asking for
    TensorFlow's own log) is left alone."""
    if strategy == "multiworker" or (strategy == "auto" and workers):
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "2":
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def check_same_start(dist: Distribution, start: int) -> None:
    """Every worker must resume from the same epoch, or their collective steps stop matching.

    Raises:
        ToolkitError: the workers' resume states disagree (one of them lost its folder, or a kill fell
            between two workers' checkpoint writes).
    """
    if not dist.multiworker:
        return
    starts = [int(v) for v in dist.exchange(start)]
    if min(starts) != max(starts):
        where = ", ".join(f"{'chief' if i == 0 else f'worker {i}'} at epoch {e}" for i, e in enumerate(starts))
        raise ToolkitError(f"multiworker: the workers' resume states disagree ({where}); pass --resume to every "
                           f"worker, or if one lost its state folder (${WORKER_STATE_ENV}), start again with another "
                           "--out")


def setup(strategy: str = "auto", workers: tuple | str = (), worker_index: int | None = None,
          connect_timeout: float = 120.0) -> Distribution:
    """Create (once per process) the strategy a run trains under.

    Multi-worker training must be set up before TensorFlow runs anything else, and only once: call this
    first. A second call with the same settings returns the same object (a pipeline's two training steps).

    Raises:
        ToolkitError: an unknown strategy, a bad cluster (see :func:`resolve_cluster`), peers that do not
            answer within ``connect_timeout`` seconds, or another cluster than this process already joined.
    """
    if strategy not in STRATEGIES:
        raise ToolkitError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if (workers or worker_index is not None) and strategy not in ("auto", "multiworker"):
        raise ToolkitError(f"--workers/--worker-index are for --strategy multiworker, not {strategy}")
    name = strategy
    if strategy == "auto":
        name = "multiworker" if workers else ("mirrored" if _gpu_count() > 1 else "one")
    elif os.environ.get(TF_CONFIG) and strategy != "multiworker":
        log.warning("TF_CONFIG is set but --strategy is %s: training on this machine alone "
                    "(pass --strategy multiworker to join the cluster it describes)", strategy)
    cluster = resolve_cluster(workers, worker_index) if name == "multiworker" else None
    key = (name, None if cluster is None else (tuple(cluster.tasks), cluster.index))
    if key in _cache:
        return _cache[key]
    if cluster is not None and any(k[0] == "multiworker" for k in _cache):
        raise ToolkitError("multiworker: this process already joined another cluster; run each cluster in its "
                           "own process")
    dist = Distribution(_create(name, cluster, connect_timeout), name, cluster, connect_timeout)
    _cache[key] = dist
    if name != "one":
        log.info("%s", dist.describe())
    return dist


def _gpu_count() -> int:
    from toolkit._keras import tf

    return len(tf().config.list_physical_devices("GPU"))


def _create(name: str, cluster: Cluster | None, connect_timeout: float):
    from toolkit._keras import tf

    t = tf()
    if name == "one":
        return t.distribute.get_strategy()
    if name == "mirrored":
        if _gpu_count() < 2:
            log.warning("mirrored: %d GPU(s) visible, so one replica; it helps only on a machine with several GPUs",
                        _gpu_count())
        return t.distribute.MirroredStrategy()
    if not connect_timeout > 0:
        raise ToolkitError(f"--connect-timeout must be > 0 seconds, got {connect_timeout}")
    _configure_coordination(cluster, connect_timeout)
    resolver = t.distribute.cluster_resolver.SimpleClusterResolver(
        t.train.ClusterSpec({job: list(a) for job, a in cluster.jobs.items()}), task_type=cluster.task_type,
        task_id=cluster.task_index, rpc_layer="grpc")
    dist = Distribution(None, name, cluster, connect_timeout)
    if cluster.size > 1:
        log.info("multiworker: %s waits up to %g s for %d peer(s): %s", cluster.address, connect_timeout,
                 cluster.size - 1, ", ".join(a for *_, a in cluster.tasks if a != cluster.address))
    with translate_errors(dist):
        return t.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


def _configure_coordination(cluster: Cluster, connect_timeout: float) -> None:
    """TensorFlow's coordination service with a bounded start: every task registers at a barrier that
    times out after ``connect_timeout`` (TensorFlow's default waits forever for a missing peer)."""
    from toolkit._keras import tf

    tf()  # TensorFlow's internals below are imported only after toolkit._keras has set it up
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2

    leader_job = "chief" if "chief" in cluster.jobs else "worker"
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster.jobs[job]))
            for job in JOBS if job in cluster.jobs]
    ctx = _eager_context()
    ctx.configure_coordination_service(
        service_type="standalone", service_leader=f"/job:{leader_job}/replica:0/task:0",
        cluster_register_timeout_in_ms=int(connect_timeout * 1000), coordinated_jobs=jobs)
    # Without the barrier the chief registers alone and then waits for its peers with no deadline.
    ctx.coordination_service.cluster_register_with_barrier = True


def _eager_context():
    """TensorFlow's eager context: coordination service settings and barriers have no public API."""
    from toolkit._keras import tf

    tf()
    from tensorflow.python.eager import context

    return context.context()


_TF_ERRORS = ("DeadlineExceededError", "UnavailableError", "CancelledError", "AbortedError", "InternalError",
              "UnknownError", "FailedPreconditionError")


@contextlib.contextmanager
def translate_errors(dist: Distribution):
    """TensorFlow's cluster errors (many lines of gRPC detail) -> one line naming the peers and the fix."""
    try:
        yield
    except Exception as exc:
        if dist.cluster is None or type(exc).__name__ not in _TF_ERRORS:
            raise
        raise ToolkitError(cluster_error_message(dist.cluster, str(exc), dist.connect_timeout,
                                                 starting=dist.strategy is None)) from exc


def worker_dir(out: str | Path, dist: Distribution) -> Path:
    """A non-chief worker's private folder for its side of collective saves and its resume state.

    Keyed by the run folder's absolute path, the cluster's size and the worker's index, so a restarted
    worker finds its state again; never inside the run folder, which belongs to the chief (on a shared disk the
    chief's and the workers' ``--out`` are the same folder). ``$TOOLKIT_WORKER_STATE`` moves it.
    """
    root = os.environ.get(WORKER_STATE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "toolkit" / "workers"
    ident = json.dumps([str(Path(out).resolve()), dist.workers, dist.index])  # not the addresses: they may move
    return base / f"{Path(out).name}-worker{dist.index}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def prepare_worker_dir(path: Path, resume: bool) -> Path:
    """Create a worker's folder; without --resume, left-over state of an earlier run is dropped first."""
    if not resume and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class BatchPlan:
    """Global batch, batch per replica and learning rate: what a step computes on, said out loud."""

    global_batch: int
    replicas: int
    lr: float
    scaled: bool  # True: --batch-size was per replica, and lr grew with the replica count

    @property
    def per_replica(self) -> float:
        return self.global_batch / self.replicas

    def describe(self) -> str:
        per = f"{self.per_replica:g}" if self.per_replica == int(self.per_replica) else f"about {self.per_replica:.1f}"
        if self.scaled:
            return (f"global batch {self.global_batch} = {self.replicas} replica(s) x {per} (--scale-batch); "
                    f"learning rate {self.lr:g} = --lr x {self.replicas} (linear scaling)")
        return (f"global batch {self.global_batch} = {self.replicas} replica(s) x {per}; learning rate {self.lr:g} "
                "(as given: the global batch is --batch-size whatever the replica count)")

    def announce(self) -> None:
        """Log the plan when it is not plain one-device training."""
        if self.replicas > 1 or self.scaled:
            log.info("%s", self.describe())

    def record(self, dist: Distribution) -> dict:
        """What config.json keeps of the distribution: the numbers that shaped the result."""
        return {"strategy": dist.name, "replicas": self.replicas, "workers": dist.workers,
                "cluster": [a for *_, a in dist.cluster.tasks] if dist.cluster else [],
                "global_batch": self.global_batch, "per_replica_batch": self.per_replica, "lr": self.lr,
                "lr_scaling": "linear" if self.scaled else "none"}


def plan_batch(batch_size: int, lr: float, replicas: int, scale_batch: bool) -> BatchPlan:
    """``--batch-size`` is the global batch, unless ``scale_batch``: then it is per replica and the learning
    rate is multiplied by the replica count (the linear scaling rule of Goyal et al., 2017)."""
    if scale_batch:
        return BatchPlan(batch_size * replicas, replicas, lr * replicas, True)
    if batch_size < replicas:
        raise ToolkitError(f"--batch-size {batch_size} is smaller than the {replicas} replicas; give at least "
                           f"{replicas} (it is the global batch) or pass --scale-batch")
    return BatchPlan(batch_size, replicas, lr, False)


def shard_options(dist: Distribution, streamed: bool):
    """The auto-shard policy for a dataset under ``dist`` (None: leave tf.data's default).

    In-memory arrays: DATA. Every worker holds the arrays anyway, produces the same shuffled global
    batches and keeps its slice, so a step sees exactly the examples of a single-process step.
    Streamed files: HINT, with the shard placed on the file list before decoding (see
    ``make_tf_dataset(shard_hint=True)``), so each worker decodes only its own files.
    """
    if not dist.multiworker:
        return None
    from toolkit._keras import tf

    t = tf()
    options = t.data.Options()
    policy = t.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.HINT if streamed else policy.DATA
    return options
