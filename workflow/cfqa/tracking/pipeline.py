"""The pipeline run: what every (method, seed) run of one pipeline shares, and its parent run.

A pipeline run is the configuration except the per-method blocks, the seed list, tracking
and report (see `pipeline_run`). Each (method, seed) run is tagged `pipeline_run` with its
short hash and is the child (`mlflow.parentRunId`) of one parent run named
`pipeline-<hash>`, created once per hash. A method's own settings are left out of the hash
so that changing or adding one method, which reruns only that method's jobs, keeps every run
in one group; they are in the run's `config_hash` tag instead (cfqa.tracking.identity).

The parent run spans the pipeline: every run that ends moves its end to that moment.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from cfqa.config import Config
from cfqa.contract.run_info import git_commit
from cfqa.io.logs import get_logger
from cfqa.tracking.locking import store_lock, with_lock_retry
from cfqa.tracking.values import MAX_PARAMS_PER_BATCH, chunks, flatten, param_value

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = get_logger(__name__)

PIPELINE_RUN_TAG = "pipeline_run"
PARENT_RUN_TAG = "mlflow.parentRunId"
# Configuration sections that differ between the runs of one pipeline, or do not change
# what a run computes (run_root: where it writes), left out of the pipeline run's hash.
NOT_SHARED = ("methods", "seeds", "tracking", "report", "scale", "run_root")


@dataclasses.dataclass(frozen=True)
class PipelineRun:
    """The group of (method, seed) runs one pipeline logs: `id` is a short hash of `params`."""
    id: str
    params: dict[str, Any]

    @property
    def run_name(self) -> str:
        return f"pipeline-{self.id}"


def pipeline_run(cfg: Config) -> PipelineRun:
    """The pipeline run of a configuration: the typed configuration (so formatting, comments
    and key order in params.yaml do not matter) without the sections in NOT_SHARED and
    without the shared `train.seed` placeholder (each run's seed is its own)."""
    shared = {f.name: dataclasses.asdict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
              if f.name not in NOT_SHARED}
    shared["train"].pop("seed", None)
    encoded = json.dumps(shared, sort_keys=True, separators=(",", ":")).encode()
    return PipelineRun(id=hashlib.sha256(encoded).hexdigest()[:12], params=shared)


def runs_named(client: MlflowClient, experiment_id: str, name: str, group: str) -> list:
    """Active runs called `name` in pipeline run `group`, oldest first."""
    runs = with_lock_retry(lambda: client.search_runs(
        [experiment_id], filter_string=f"attributes.run_name = '{name}' and tags.{PIPELINE_RUN_TAG} = '{group}'",
        max_results=1000), "search runs")
    return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))


def extend_parent(client: MlflowClient, uri: str, run_id: str) -> None:
    """The parent run spans the pipeline: its end moves to now, when `run_id` (its child) has
    just ended. Under the store's file lock, so two jobs cannot move it back."""
    run = with_lock_retry(functools.partial(client.get_run, run_id), "read run")
    parent_id = run.data.tags.get(PARENT_RUN_TAG)
    if parent_id is None:
        return
    now_ms = int(time.time() * 1000)
    with store_lock(uri):
        parent = with_lock_retry(functools.partial(client.get_run, parent_id), "read pipeline run")
        if (parent.info.end_time or 0) < now_ms:
            with_lock_retry(lambda: client.set_terminated(parent_id, "FINISHED", end_time=now_ms),
                            "extend pipeline run")


def pipeline_parent(client: MlflowClient, experiment_id: str, pipeline: PipelineRun, uri: str) -> str:
    """The id of the parent run of `pipeline`, created (with the shared configuration as its
    params) by the first job that needs it. A SQLite store is searched and written under its
    file lock; on a server without that lock two jobs may both create one, and every job
    then settles on the oldest and deletes its own duplicate."""
    from mlflow.entities import Param

    with store_lock(uri):
        existing = runs_named(client, experiment_id, pipeline.run_name, pipeline.id)
        if existing:
            return existing[0].info.run_id
        run = with_lock_retry(lambda: client.create_run(
            experiment_id, run_name=pipeline.run_name,
            tags={PIPELINE_RUN_TAG: pipeline.id, "git_commit": git_commit()}), "create pipeline run")
        run_id = run.info.run_id
        params = [Param(k, param_value(v)) for k, v in flatten(pipeline.params).items()]
        for batch in chunks(params, MAX_PARAMS_PER_BATCH):
            with_lock_retry(functools.partial(client.log_batch, run_id, params=batch, synchronous=True),
                            "log pipeline params")
        with_lock_retry(lambda: client.set_terminated(run_id, "FINISHED"), "finish pipeline run")
    oldest = runs_named(client, experiment_id, pipeline.run_name, pipeline.id)[0].info.run_id
    if oldest != run_id:
        with_lock_retry(lambda: client.delete_run(run_id), "delete duplicate pipeline run")
        return oldest
    log.info("created MLflow pipeline run %s (%s)", run_id, pipeline.run_name)
    return run_id
