"""A run's duration is its work: it starts when training starts, and evaluate ends it at
start + training time + evaluation time; the wait between the two jobs (Snakemake or DVC
running other jobs) is the metric `time/queue_wait_s`, beside `time/train_s` and
`time/evaluate_s`."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from cfqa.tracking.locking import with_lock_retry

if TYPE_CHECKING:
    from mlflow import MlflowClient

# A run's work and waiting, in seconds.
TRAIN_TIME = "time/train_s"
EVALUATE_TIME = "time/evaluate_s"
QUEUE_WAIT = "time/queue_wait_s"


def work_times(client: MlflowClient | None, run_id: str | None, train_wall_s: float, evaluate_s: float,
               now_ms: int) -> tuple[int | None, int, dict[str, float]]:
    """(start_ms, end_ms, metrics) of a run that evaluate ends now: its duration is training
    plus evaluation time. A run train opened keeps its start and holds TRAIN_TIME; the wait
    between the two jobs is QUEUE_WAIT. A run evaluate creates (start_ms not None) is dated
    back by train.json's wall time and the evaluation's; its wait is unknown."""
    if run_id is None:
        start_ms = now_ms - round((train_wall_s + evaluate_s) * 1000)
        return start_ms, now_ms, {TRAIN_TIME: train_wall_s, EVALUATE_TIME: evaluate_s}
    run = with_lock_retry(functools.partial(client.get_run, run_id), "read run")
    started_ms = run.info.start_time
    train_s = run.data.metrics.get(TRAIN_TIME, train_wall_s)
    elapsed_s = (now_ms - started_ms) / 1000
    metrics = {TRAIN_TIME: train_s, EVALUATE_TIME: evaluate_s,
               QUEUE_WAIT: max(0.0, elapsed_s - train_s - evaluate_s)}
    return None, min(now_ms, started_ms + round((train_s + evaluate_s) * 1000)), metrics
