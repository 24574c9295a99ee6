"""BenchmarkConfig: the settings of ``toolkit benchmark`` and a pipeline's ``[benchmark]``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.degrade import DEGRADATIONS
from toolkit.settings import INT, check, setting


@dataclass(frozen=True)
class BenchmarkConfig:
    folder: str = setting(help="An export folder written by 'toolkit export'.", argument=True)
    # 1 is a proxy for one Pi core
    threads: tuple = setting((1, "all"), "onnxruntime thread counts (comma list); all = every core this process "
                             "may use.", item=INT, low=1, every="all")
    # batch 1 gives the latency percentiles; larger batches the throughput
    batch_size: tuple = setting((1, 32), "Batch sizes (comma list): 1 for latency, larger ones for throughput.",
                                item=INT, low=1, aliases=("--batch",), toml_aliases=("batch",))
    data: str | None = setting(None, "Score every image of this data (folder, .h5, synthetic:NAME) instead of the "
                               "source run's test split.")
    strict: bool = setting(False, "Unreadable images in --data are an error instead of a skipped warning.")
    # the manifest names its run, never where it is: the run must be the one (its model's sha256) it was made from
    run: str | None = setting(None, "The run folder the export was made from: its test split to score on and its "
                              "Keras model as the baseline (checked against the manifest's sha256).")
    repeats: int = setting(50, "Batch-1 calls per file and thread count (after warm-up).", low=1)
    # and at least this long, so fast files get stable percentiles
    min_seconds: float = setting(1.0, "Shortest time each measurement runs.", above=0, cli=False)
    # every operation on every image, a fixed seed: the same degraded copy on every run and every file
    degrade: bool = setting(False, "Also score every file on a copy of the test images through the door camera's "
                            f"degradations ({', '.join(DEGRADATIONS)}) and report both accuracies.")
    # a TensorFlow child process per thread count
    keras: bool = setting(True, "Include the float Keras model (a TensorFlow child process) as the baseline.",
                          flag="--keras/--no-keras")

    def __post_init__(self):
        check(self)
