"""The train stage's side: the run of one (method, seed) opens when training starts.

Its duration is the real one, its losses arrive while it trains and, unless switched off
with MLflow's own `MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false`, MLflow samples CPU, memory,
disk and network every 10 s beside it. The evaluate stage finds the run by its tags
(pipeline run, method, seed, config hash; status RUNNING), adds metrics and artifacts and
ends it (cfqa.tracking.results_dir). Where train ran without tracking, or its run is gone,
evaluate creates the run itself.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from cfqa.config import TrackingConfig
from cfqa.io.logs import get_logger
from cfqa.tracking.datasets import dataset_inputs, log_datasets
from cfqa.tracking.experiment import open_experiment
from cfqa.tracking.failures import error_text, mark_tracking_error
from cfqa.tracking.identity import RunIdentity, source_tags
from cfqa.tracking.locking import with_lock_retry
from cfqa.tracking.pipeline import PARENT_RUN_TAG, pipeline_parent
from cfqa.tracking.store import resolved_uri
from cfqa.tracking.values import as_metric_entities, flatten, log_batches, logged_steps, param_value, valid_key
from cfqa.tracking.work_times import TRAIN_TIME

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = get_logger(__name__)

SYSTEM_METRICS_INTERVAL_S = 10.0


def _system_metrics_enabled() -> bool:
    """On unless MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING says otherwise: sampling every 10 s costs
    about 0.1 % of one core (psutil), far below the noise of a training step."""
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

    return MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get() if MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.is_set() else True


class TrainingRun:
    """The MLflow run of one (method, seed), open while it trains. Logging here never fails
    training: an error is a warning (evaluate logs the curve points this run lacks). Without a
    store (`client` None) every method does nothing."""

    def __init__(self, client: MlflowClient | None = None, run_id: str | None = None, uri: str = ""):
        self.client, self.run_id, self.uri = client, run_id, uri
        self._monitor = None
        self._warned = False

    def _try(self, action: Callable[[], Any], what: str) -> None:
        if self.client is None:
            return
        try:
            with_lock_retry(action, what)
        except Exception as error:
            if not self._warned:
                log.warning("MLflow run %s: %s failed (%s); training goes on, evaluate fills in the curve",
                            self.run_id, what, error)
                self._warned = True

    def start_system_metrics(self) -> None:
        if self.client is None or not _system_metrics_enabled():
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                             tracking_uri=self.uri)
        self._monitor.start()

    def log_point(self, point: Mapping[str, Any]) -> None:
        """One point of the training curve ({"step": int, "train_loss": ..., "val_loss": ...})."""
        if self.client is None:
            return
        metrics = as_metric_entities({}, [point], int(time.time() * 1000))
        if metrics:
            self._try(functools.partial(self.client.log_batch, self.run_id, metrics=metrics, synchronous=True),
                      f"log step {point.get('step')}")

    def training_done(self, curve: Iterable[Mapping[str, Any]]) -> None:
        """Training finished: the curve points the run lacks (those before a resumed checkpoint)
        are logged with the training time (`time/train_s`, from the run's start), system
        metrics stop, and the run stays RUNNING for evaluate to end."""
        self._stop_monitor()
        if self.client is None:
            return
        curve = list(curve)

        def log_missing() -> None:
            now_ms = int(time.time() * 1000)
            keys = {valid_key(k) for row in curve for k in row if k != "step"}
            logged = logged_steps(self.client, self.run_id, keys)
            started_ms = self.client.get_run(self.run_id).info.start_time
            log_batches(self.client, self.run_id, [],
                        as_metric_entities({TRAIN_TIME: (now_ms - started_ms) / 1000}, curve, now_ms, logged))

        self._try(log_missing, "log the training curve")

    def fail(self) -> None:
        self._stop_monitor()
        self._try(lambda: self.client.set_terminated(self.run_id, "FAILED"), "mark the run failed")

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None


def _end_stale_runs(client: MlflowClient, experiment_id: str, identity: RunIdentity) -> None:
    """Runs of this identity still RUNNING are earlier attempts that were killed (one job per
    (method, seed) runs at a time): they are marked KILLED, and a complete rerun replaces them."""
    for run in _open_runs(client, experiment_id, identity):
        with_lock_retry(functools.partial(client.set_terminated, run.info.run_id, "KILLED"), "end stale run")
        log.info("MLflow run %s of an earlier, interrupted attempt marked KILLED", run.info.run_id)


def _open_runs(client: MlflowClient, experiment_id: str, identity: RunIdentity) -> list:
    """Runs of `identity` still RUNNING, newest first."""
    conditions = [f"tags.`{key}` = '{value}'" for key, value in identity.tags.items()]
    conditions.append("attributes.status = 'RUNNING'")
    return with_lock_retry(lambda: client.search_runs(
        [experiment_id], filter_string=" and ".join(conditions), order_by=["attributes.start_time DESC"],
        max_results=100), "search open runs")


def start_training_run(tracking: TrackingConfig, identity: RunIdentity, *, params: Mapping[str, Any],
                       datasets: Mapping[str, Iterable[Path]], entry_point: str = "cfqa train") -> TrainingRun:
    """Opens the run of `identity` as training starts: tags (identity, source, git, DVC
    experiment), params, the data files as datasets, system metrics. When the store cannot be
    reached training goes on untracked (a warning), and evaluate creates the run as before."""
    try:
        client, experiment_id = open_experiment(tracking)
        uri = resolved_uri(tracking.uri)
        _end_stale_runs(client, experiment_id, identity)
        parent_id = pipeline_parent(client, experiment_id, identity.pipeline, uri)
        tags = source_tags(entry_point) | identity.tags | {PARENT_RUN_TAG: parent_id}
        run_id = with_lock_retry(lambda: client.create_run(experiment_id, tags=tags, run_name=identity.run_name),
                                 "create run").info.run_id
    except Exception as error:
        log.warning("MLflow tracking unavailable (%s): training without it; evaluate logs the run", error)
        return TrainingRun()
    run = TrainingRun(client, run_id, uri)
    try:
        from mlflow.entities import Param

        log_batches(client, run_id, [Param(k, param_value(v)) for k, v in flatten(params).items()], [])
        log_datasets(client, run_id, dataset_inputs(datasets))
        run.start_system_metrics()
    except Exception as error:       # training goes on; evaluate logs what the run lacks
        log.warning("MLflow run %s: logging its params and datasets failed (%s); training goes on and "
                    "evaluate logs what the run lacks", run_id, error_text(error))
        mark_tracking_error(client, run_id, "logging params and datasets at training start", error)
    except BaseException:
        run.fail()
        raise
    log.info("MLflow run %s (%s, pipeline run %s, config %s) started", run_id, identity.run_name,
             identity.pipeline.id, identity.config_hash)
    return run


def find_training_run(client: MlflowClient, experiment_id: str, identity: RunIdentity) -> str | None:
    """The id of the open run the train stage started for `identity`, or None."""
    runs = _open_runs(client, experiment_id, identity)
    return runs[0].info.run_id if runs else None
