"""MLflow tracking: one run per (method, seed) with params, final and per-step metrics,
artifacts and tags (git commit, data hash, method, seed), grouped under its pipeline run.

A pipeline run is what every (method, seed) run of one pipeline shares: the configuration
except the per-method blocks, the seed list, tracking and report (see `pipeline_run`). Each
(method, seed) run is tagged `pipeline_run` with its short hash and is the child
(`mlflow.parentRunId`) of one parent run named `pipeline-<hash>`, created once per hash. A
method's own settings are left out of the hash so that changing or adding one method, which
reruns only that method's jobs, keeps every run in one group; a rerun of a (method, seed)
replaces its earlier run in the group instead of piling up beside it.

The default store is `sqlite:///mlflow.db` relative to the project root (the working
directory of every stage). Parallel evaluate jobs write that one SQLite file, so the store
and the experiment are created under a file lock, and every write is retried with backoff
when SQLite answers "database is locked". Artifacts go to `mlartifacts/` beside the database
(an absolute location fixed when the experiment is created), not to `./mlruns` relative to
whichever directory a job happened to start in. Environment variables are never logged.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, TypeVar

from filelock import FileLock

import msgspec

from cfqa.config import Config, TrackingConfig
from cfqa.contract import MethodFiles, read_curve, read_metrics, read_train_record
from cfqa.contract.run_info import git_commit
from cfqa.logs import get_logger

if TYPE_CHECKING:  # mlflow is imported where it is used: importing it costs seconds
    from mlflow import MlflowClient

# The pipeline runs offline and on clusters; it should not send usage telemetry. setdefault:
# a user who wants it can still switch it on. Set before mlflow is first imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

log = get_logger("cfqa.tracking")
T = TypeVar("T")

ARTIFACTS_DIRNAME = "mlartifacts"
PIPELINE_RUN_TAG = "pipeline_run"
PARENT_RUN_TAG = "mlflow.parentRunId"
# Configuration sections that differ between the runs of one pipeline, or do not change
# what a run computes: left out of the pipeline run's hash.
NOT_SHARED = ("methods", "seeds", "tracking", "report")
LOCK_ATTEMPTS = 8
LOCK_FIRST_DELAY_S = 0.2
# MLflow's limits per log_batch call (mlflow.utils.validation).
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_INVALID_KEY_CHARS = re.compile(r"[^\w\-. /]")


def _quiet_mlflow() -> None:
    """MLflow and alembic log every schema migration at INFO; keep stage logs to our lines."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


# ---- SQLite store: where the database and the artifacts live ----------------------------

def sqlite_database_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (absolute; relative paths from the current
    directory, as SQLAlchemy resolves them), or None for any other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    return (Path(path) if path.startswith("/") else Path.cwd() / path).resolve()


def resolved_uri(uri: str) -> str:
    """A relative `sqlite:///` URI made absolute against the current directory. MLflow caches
    one store per URI string in a process, and SQLite resolves a relative path when a new
    connection opens, so a relative URI could reach another directory's database after a
    chdir; other URIs are returned unchanged."""
    database = sqlite_database_path(uri)
    if database is None:
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return f"sqlite:///{database}" + (f"?{query}" if query else "")


def artifact_location(uri: str) -> str | None:
    """`mlartifacts/` beside a SQLite database as a file URI; None lets a server decide."""
    database = sqlite_database_path(uri)
    return None if database is None else (database.parent / ARTIFACTS_DIRNAME).as_uri()


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialises creating the database (schema migrations) and the experiment across
    processes; writes after that rely on SQLite's own locking plus retries."""
    database = sqlite_database_path(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(database) + ".lock", timeout=120):
        yield


# ---- retry on "database is locked" ------------------------------------------------------

def is_database_locked(error: BaseException) -> bool:
    """True if the error, or any error it was raised from, is SQLite's lock contention."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if "database is locked" in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def with_lock_retry(action: Callable[[], T], what: str, attempts: int = LOCK_ATTEMPTS,
                    first_delay_s: float = LOCK_FIRST_DELAY_S) -> T:
    """`action()`, retried with exponential backoff and jitter while the database is locked."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:  # MLflow wraps SQLAlchemy's OperationalError in its own type
            if attempt == attempts or not is_database_locked(error):
                raise
            delay = first_delay_s * 2 ** (attempt - 1) * (1 + random.random())
            log.warning("%s: database is locked (attempt %d/%d); retrying in %.1f s",
                        what, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# ---- what gets logged -------------------------------------------------------------------

def _key(name: str) -> str:
    return _INVALID_KEY_CHARS.sub("_", name)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for name, value in mapping.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if isinstance(value, Mapping):
            flat.update(flatten(value, key))
        else:
            flat[_key(key)] = value
    return flat


def _metric_value(value: Any) -> float | None:
    """Numbers (bools as 0/1) are metrics; text, lists and None are not."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _param_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ---- the run ----------------------------------------------------------------------------

def open_experiment(tracking: TrackingConfig) -> tuple[MlflowClient, str]:
    """(client, experiment id): the store is opened and the experiment got or created once,
    under a file lock. Opening a new SQLite store runs schema migrations, which fail when two
    processes run them at once."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _quiet_mlflow()
    name, uri = tracking.experiment, resolved_uri(tracking.uri)
    with _store_lock(uri):
        client = with_lock_retry(lambda: MlflowClient(tracking_uri=uri), "open tracking store")
        experiment = with_lock_retry(lambda: client.get_experiment_by_name(name), "get experiment")
        if experiment is None:
            location = artifact_location(uri)
            try:
                experiment_id = with_lock_retry(
                    lambda: client.create_experiment(name, artifact_location=location), "create experiment")
                log.info("created MLflow experiment %r (artifacts in %s)", name, location or "server default")
                return client, experiment_id
            except MlflowException as error:   # a remote store: created meanwhile by another job
                if getattr(error, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage != "active":
        raise RuntimeError(f"MLflow experiment {name!r} in {uri} is deleted; restore it "
                           f"(`mlflow experiments restore`) or set another tracking.experiment")
    return client, experiment.experiment_id


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


def _runs_named(client: MlflowClient, experiment_id: str, name: str, group: str) -> list:
    """Active runs called `name` in pipeline run `group`, oldest first."""
    runs = with_lock_retry(lambda: client.search_runs(
        [experiment_id], filter_string=f"attributes.run_name = '{name}' and tags.{PIPELINE_RUN_TAG} = '{group}'",
        max_results=1000), "search runs")
    return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))


def pipeline_parent(client: MlflowClient, experiment_id: str, pipeline: PipelineRun, uri: str) -> str:
    """The id of the parent run of `pipeline`, created (with the shared configuration as its
    params) by the first job that needs it. A SQLite store is searched and written under its
    file lock; on a server without that lock two jobs may both create one, and every job
    then settles on the oldest and deletes its own duplicate."""
    from mlflow.entities import Param

    with _store_lock(uri):
        existing = _runs_named(client, experiment_id, pipeline.run_name, pipeline.id)
        if existing:
            return existing[0].info.run_id
        run = with_lock_retry(lambda: client.create_run(
            experiment_id, run_name=pipeline.run_name,
            tags={PIPELINE_RUN_TAG: pipeline.id, "git_commit": git_commit()}), "create pipeline run")
        run_id = run.info.run_id
        params = [Param(k, _param_value(v)) for k, v in flatten(pipeline.params).items()]
        for batch in _chunks(params, _MAX_PARAMS_PER_BATCH):
            with_lock_retry(functools.partial(client.log_batch, run_id, params=batch, synchronous=True),
                            "log pipeline params")
        with_lock_retry(lambda: client.set_terminated(run_id, "FINISHED"), "finish pipeline run")
    oldest = _runs_named(client, experiment_id, pipeline.run_name, pipeline.id)[0].info.run_id
    if oldest != run_id:
        with_lock_retry(lambda: client.delete_run(run_id), "delete duplicate pipeline run")
        return oldest
    log.info("created MLflow pipeline run %s (%s)", run_id, pipeline.run_name)
    return run_id


def log_method_run(tracking: TrackingConfig, *, run_name: str, params: Mapping[str, Any],
                   metrics: Mapping[str, Any], step_metrics: list[Mapping[str, Any]],
                   artifacts: list[Path], tags: Mapping[str, Any], pipeline: PipelineRun | None = None) -> str:
    """Logs one finished run and returns its id.

    With `pipeline`, the run is tagged with its id, becomes a child of its parent run, and,
    once logged, replaces (deletes) earlier runs of the same name in that pipeline run.

    params and metrics may be nested (logged with dotted keys); metrics keeps only numbers.
    step_metrics: one mapping per step, {"step": int, name: value, ...}; None values are
    skipped (a step without validation). artifacts: files or directories. tags: strings for
    the run (the caller passes data_hash, method, seed); git_commit is added here.
    """
    from mlflow.entities import Metric, Param

    artifacts = [Path(a) for a in artifacts]
    missing = [str(a) for a in artifacts if not a.exists()]
    if missing:
        raise FileNotFoundError(f"artifacts to log are missing: {missing}")
    for index, row in enumerate(step_metrics):
        if "step" not in row:
            raise ValueError(f"step_metrics[{index}]: expected a 'step' key, got {sorted(row)}")

    client, experiment_id = open_experiment(tracking)
    commit = git_commit()
    run_tags = {**{k: str(v) for k, v in tags.items()}, "git_commit": commit,
                "mlflow.source.git.commit": commit}
    if pipeline is not None:
        parent_id = pipeline_parent(client, experiment_id, pipeline, resolved_uri(tracking.uri))
        run_tags |= {PIPELINE_RUN_TAG: pipeline.id, PARENT_RUN_TAG: parent_id}
    run = with_lock_retry(lambda: client.create_run(experiment_id, tags=run_tags, run_name=run_name),
                          "create run")
    run_id = run.info.run_id
    try:
        now_ms = int(time.time() * 1000)
        param_entities = [Param(k, _param_value(v)) for k, v in flatten(params).items()]
        metric_entities = [Metric(k, value, now_ms, 0) for k, v in flatten(metrics).items()
                           if (value := _metric_value(v)) is not None]
        for row in step_metrics:
            step = int(row["step"])
            metric_entities += [Metric(_key(k), value, now_ms, step) for k, v in row.items()
                                if k != "step" and (value := _metric_value(v)) is not None]
        for batch in _chunks(param_entities, _MAX_PARAMS_PER_BATCH):
            with_lock_retry(functools.partial(client.log_batch, run_id, params=batch, synchronous=True),
                            "log params")
        for batch in _chunks(metric_entities, _MAX_METRICS_PER_BATCH):
            with_lock_retry(functools.partial(client.log_batch, run_id, metrics=batch, synchronous=True),
                            "log metrics")
        for path in artifacts:
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=path.name)
            else:
                client.log_artifact(run_id, str(path))
        with_lock_retry(lambda: client.set_terminated(run_id, "FINISHED"), "finish run")
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    replaced = []
    if pipeline is not None:
        # Only after the new run is complete: a failed rerun leaves the earlier run in place.
        for older in _runs_named(client, experiment_id, run_name, pipeline.id):
            if older.info.run_id != run_id:
                with_lock_retry(functools.partial(client.delete_run, older.info.run_id), "delete replaced run")
                replaced.append(older.info.run_id)
    log.info("logged MLflow run %s (%s%s): %d params, %d metric values, %d artifacts%s",
             run_id, run_name, f", pipeline run {pipeline.id}" if pipeline else "", len(param_entities),
             len(metric_entities), len(artifacts), f"; replaced {', '.join(replaced)}" if replaced else "")
    return run_id


def log_results_dir(tracking: TrackingConfig, results_dir: Path, *, method: str,
                    pipeline: PipelineRun | None = None, extra_artifacts: Iterable[Path] = ()) -> str:
    """Logs one (method, seed) run's results directory (train.json, metrics.json,
    train_curve.csv, read through cfqa.contract) as one run named `{method}-seed{seed}`,
    tagged with the hash of the data it trained on and of its backbone, under `pipeline`."""
    files = MethodFiles(Path(results_dir))
    train = read_train_record(files.train_record, method)
    metrics = read_metrics(files.metrics, method)
    curve = read_curve(files.train_curve) if files.train_curve.is_file() else []
    params = {"method": method, "registry_method": train.registry_method, "backbone": train.backbone,
              "seed": train.seed, "options": train.run.params.get("options") or {},
              "train": train.run.params.get("train") or {}}
    train_metrics = msgspec.to_builtins(train)
    evaluation = msgspec.to_builtins(metrics)
    for record in (train_metrics, evaluation):      # logged as params and tags, not as metrics
        for key in ("run", "method", "seed", "schema_version"):
            record.pop(key, None)
    artifacts = [path for path in (files.train_record, files.metrics, files.train_curve) if path.is_file()]
    tags = {"method": method, "seed": train.seed, "data_hash": train.run.data_sha256 or "unknown",
            "backbone_hash": train.run.backbone_sha256 or "unknown", "registry_method": train.registry_method,
            "backbone": train.backbone, "git_dirty": train.run.git_dirty,
            "cpu_model": train.run.hardware.cpu_model, "blas": train.run.hardware.blas}
    return log_method_run(tracking, run_name=f"{method}-seed{train.seed}", params=params,
                          metrics={"train": train_metrics, **evaluation},
                          step_metrics=[msgspec.to_builtins(row) for row in curve],
                          artifacts=artifacts + [Path(a) for a in extra_artifacts], tags=tags, pipeline=pipeline)
