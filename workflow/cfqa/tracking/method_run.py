"""One finished (method, seed) run logged: params, final and per-step metrics, datasets,
artifacts and tags, into the run the train stage opened or a new one; a complete rerun of
the same configuration replaces the earlier run in its pipeline run, a run of another
configuration stays beside it, so the UI compares them.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from cfqa.config import TrackingConfig
from cfqa.io.logs import get_logger
from cfqa.tracking.datasets import dataset_inputs, log_datasets
from cfqa.tracking.experiment import open_experiment
from cfqa.tracking.failures import mark_tracking_error
from cfqa.tracking.identity import CONFIG_HASH_TAG, source_tags
from cfqa.tracking.locking import with_lock_retry
from cfqa.tracking.pipeline import PARENT_RUN_TAG, PIPELINE_RUN_TAG, PipelineRun, extend_parent, pipeline_parent, runs_named
from cfqa.tracking.store import local_artifact_dir, resolved_uri
from cfqa.tracking.values import as_metric_entities, flatten, log_batches, logged_steps, param_value, valid_key

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = get_logger(__name__)


def log_method_run(tracking: TrackingConfig, *, run_name: str, params: Mapping[str, Any],
                   metrics: Mapping[str, Any], step_metrics: list[Mapping[str, Any]],
                   artifacts: list[Path], tags: Mapping[str, Any], pipeline: PipelineRun | None = None,
                   run_id: str | None = None, datasets: Mapping[str, Iterable[Path]] | None = None,
                   entry_point: str = "cfqa evaluate", start_ms: int | None = None,
                   end_ms: int | None = None) -> str:
    """Logs one finished run and returns its id.

    run_id: a run the train stage opened; it gets what it does not hold yet (params, metric
    values at steps it lacks, datasets, artifacts, tags) and is ended. Without it a run is
    created, its Source being `entry_point`.

    With `pipeline`, the run is tagged with its id, becomes a child of its parent run, and,
    once logged, replaces (deletes) earlier runs of the same name in that pipeline run and of
    the same configuration (its `config_hash` tag, where it has one); the parent's end moves
    to the run's end.

    start_ms: the start of a run created here (default: now); end_ms: the end recorded
    when the run finishes (default: now); epoch milliseconds, as MLflow stores them.

    params and metrics may be nested (logged with dotted keys); metrics keeps only numbers.
    step_metrics: one mapping per step, {"step": int, name: value, ...}; None values are
    skipped (a step without validation). artifacts: files or directories. tags: strings for
    the run (the caller passes data_hash, method, seed); the source and git tags are added
    here. datasets: data files by the context they were read in ("evaluation": [...]).
    """
    from mlflow.entities import Param

    artifacts = [Path(a) for a in artifacts]
    missing = [str(a) for a in artifacts if not a.exists()]
    if missing:
        raise FileNotFoundError(f"artifacts to log are missing: {missing}")
    for index, row in enumerate(step_metrics):
        if "step" not in row:
            raise ValueError(f"step_metrics[{index}]: expected a 'step' key, got {sorted(row)}")

    client, experiment_id = open_experiment(tracking)
    uri = resolved_uri(tracking.uri)
    run_tags = {k: str(v) for k, v in tags.items()}
    if run_id is None:
        run_tags = source_tags(entry_point) | run_tags
        if pipeline is not None:
            parent_id = pipeline_parent(client, experiment_id, pipeline, uri)
            run_tags |= {PIPELINE_RUN_TAG: pipeline.id, PARENT_RUN_TAG: parent_id}
        run_id = with_lock_retry(lambda: client.create_run(experiment_id, tags=run_tags, run_name=run_name,
                                                           start_time=start_ms), "create run").info.run_id
        held_params: dict[str, str] = {}
        logged: set[tuple[str, int]] = set()
    else:
        held = with_lock_retry(functools.partial(client.get_run, run_id), "read run").data
        held_params = held.params
        step_keys = {valid_key(k) for row in step_metrics for k in row if k != "step"}
        logged = {(key, 0) for key in held.metrics} | logged_steps(client, run_id, step_keys)
        for key, value in run_tags.items():
            with_lock_retry(functools.partial(client.set_tag, run_id, key, value), "tag run")
    try:
        param_entities = [Param(k, value) for k, v in flatten(params).items()
                          if held_params.get(k) != (value := param_value(v))]
        metric_entities = as_metric_entities(metrics, step_metrics, int(time.time() * 1000), logged)
        log_batches(client, run_id, param_entities, metric_entities)
        if datasets:
            log_datasets(client, run_id, dataset_inputs(datasets))
        _log_artifacts(client, uri, run_id, artifacts)
        with_lock_retry(lambda: client.set_terminated(run_id, "FINISHED", end_time=end_ms), "finish run")
    except BaseException as error:
        mark_tracking_error(client, run_id, f"logging {run_name}", error, status="FAILED")
        raise
    replaced = []
    if pipeline is not None:
        # Only after the new run is complete: a failed rerun leaves the earlier run in place.
        for older in _same_configuration(client, experiment_id, run_name, pipeline.id, run_tags.get(CONFIG_HASH_TAG)):
            if older.info.run_id != run_id:
                with_lock_retry(functools.partial(client.delete_run, older.info.run_id), "delete replaced run")
                replaced.append(older.info.run_id)
        extend_parent(client, uri, run_id)
    log.info("logged MLflow run %s (%s%s): %d params, %d metric values, %d artifacts%s",
             run_id, run_name, f", pipeline run {pipeline.id}" if pipeline else "", len(param_entities),
             len(metric_entities), len(artifacts), f"; replaced {', '.join(replaced)}" if replaced else "")
    return run_id


def _same_configuration(client: MlflowClient, experiment_id: str, name: str, group: str,
                        config_hash: str | None) -> list:
    """Active runs called `name` in pipeline run `group` of configuration `config_hash` (of any
    configuration when None: a run logged without one): what a complete rerun replaces. Runs
    of other configurations stay, so every configuration keeps its runs."""
    runs = runs_named(client, experiment_id, name, group)
    if config_hash is None:
        return runs
    return [run for run in runs if run.data.tags.get(CONFIG_HASH_TAG) == config_hash]


def _log_artifacts(client: MlflowClient, uri: str, run_id: str, paths: Iterable[Path]) -> None:
    """Files and directories into the run's artifacts. A SQLite store's `mlflow-artifacts:`
    location is written here on disk (MLflow's client would need a server for that scheme)."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    run = with_lock_retry(functools.partial(client.get_run, run_id), "read run")
    local = local_artifact_dir(uri, run.info.artifact_uri)
    repository = LocalArtifactRepository(str(local)) if local is not None else None
    for path in paths:
        if repository is not None:
            if path.is_dir():
                repository.log_artifacts(str(path), artifact_path=path.name)
            else:
                repository.log_artifact(str(path))
        elif path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=path.name)
        else:
            client.log_artifact(run_id, str(path))
