"""MLflow tracking: one run per (method, seed) with params, final and per-step metrics,
datasets, artifacts and tags (git commit, data hash, method, seed, config hash), grouped under
its pipeline run.

The run opens when training starts (`start_training_run`, called by the train stage): its
duration is the real one, its losses arrive while it trains and, unless switched off with
MLflow's own `MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false`, MLflow samples CPU, memory, disk and
network every 10 s beside it. The evaluate stage finds the run by its tags (pipeline run,
method, seed, config hash; status RUNNING), adds metrics and artifacts and ends it
(`log_results_dir`). Where train ran without tracking, or its run is gone, evaluate creates the
run itself.

A pipeline run is what every (method, seed) run of one pipeline shares: the configuration
except the per-method blocks, the seed list, tracking and report (see `pipeline_run`). Each
(method, seed) run is tagged `pipeline_run` with its short hash and is the child
(`mlflow.parentRunId`) of one parent run named `pipeline-<hash>`, created once per hash. A
method's own settings are left out of the hash so that changing or adding one method, which
reruns only that method's jobs, keeps every run in one group; they are in the run's
`config_hash` tag instead. A rerun of a (method, seed) replaces its earlier run in the group
once it is complete, instead of piling up beside it; a run of another configuration (a
changed option: `dvc exp run -S methods.lora.options.r=16`) stays beside the earlier ones,
so the UI compares them. A configuration is what `config_hash` hashes: the pipeline run and
the method's own settings, not the seed, so the UI groups a configuration's seeds (see
cfqa.tracking_view, the runs view every experiment is given).

A run's duration is its work: it starts when training starts, and evaluate ends it at start +
training time + evaluation time; the wait between the two jobs (Snakemake or DVC running
other jobs) is the metric `time/queue_wait_s`, beside `time/train_s` and `time/evaluate_s`.
The parent run spans the pipeline: every run that ends moves its end to that moment.

The default store is `sqlite:///mlflow.db` relative to the project root (the working
directory of every stage). Parallel jobs write that one SQLite file, so the store and the
experiment are created under a file lock, and every write is retried with backoff when SQLite
answers "database is locked". Artifacts go to `mlartifacts/` beside the database. The
experiment records them as `mlflow-artifacts:/<experiment>`, MLflow's own location-free
scheme, which `mlflow server`/`mlflow ui` serve from `./mlartifacts`: a copied or moved
checkout keeps its runs' artifacts and writes new ones under itself, never into the
original's folder. Environment variables are never logged (only DVC's experiment name is read,
as a tag).

A relative store location is relative to the project root: the working directory, or under
DVC the `DVC_ROOT` it sets. `dvc exp run --queue` runs the stages in a temporary copy of the
workspace, which DVC deletes, with DVC_ROOT naming the checkout the experiment was queued
from, so queued experiments log into the checkout's store (`project_root`).
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
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, TypeVar

from filelock import FileLock

import msgspec

from cfqa.atomic_io import atomic_path
from cfqa.config import Config, TrackingConfig
from cfqa.contract import MethodFiles, read_curve, read_metrics, read_train_record
from cfqa.contract.run_info import git_commit, git_dirty
from cfqa.headline import headline
from cfqa.logs import get_logger
from cfqa.redact import redact
from cfqa.tracking_view import headline_metrics

if TYPE_CHECKING:  # mlflow is imported where it is used: importing it costs seconds
    from mlflow import MlflowClient

# The pipeline runs offline and on clusters; it should not send usage telemetry. setdefault:
# a user who wants it can still switch it on. Set before mlflow is first imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

log = get_logger("cfqa.tracking")
T = TypeVar("T")

ARTIFACTS_DIRNAME = "mlartifacts"
# MLflow's proxied-artifact scheme: the server maps `mlflow-artifacts:/<path>` to
# `<--artifacts-destination>/<path>` (default ./mlartifacts), so the store holds no absolute path.
PROXIED_ARTIFACTS_SCHEME = "mlflow-artifacts"
PIPELINE_RUN_TAG = "pipeline_run"
PARENT_RUN_TAG = "mlflow.parentRunId"
CONFIG_HASH_TAG = "config_hash"
# The UI shows runs, not GenAI traces, first for this kind (MLflow 3 reads the tag; 3.17's UI
# also needs its "Machine learning" switch, or `?workflowType=machine_learning` in the URL).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# Set by `dvc exp run` for the command it runs (dvc.env.DVC_EXP_NAME).
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"   # mlflow.utils.mlflow_tags (importing it imports mlflow)
MLFLOW_GIT_DIRTY = "mlflow.source.git.dirty"
DATASET_CONTEXT_TAG = "mlflow.data.context"   # mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT
# MLflow's dataset digest column holds 36 characters: the digest is the start of the file's
# sha256; the whole hash is the input's `sha256` tag.
DATASET_DIGEST_CHARS = 32
SYSTEM_METRICS_INTERVAL_S = 10.0
# A run's work and waiting (see the module docstring), in seconds.
TRAIN_TIME = "time/train_s"
EVALUATE_TIME = "time/evaluate_s"
QUEUE_WAIT = "time/queue_wait_s"
ARTIFACT_SUFFIXES = (".json", ".csv")
# Configuration sections that differ between the runs of one pipeline, or do not change
# what a run computes: left out of the pipeline run's hash.
NOT_SHARED = ("methods", "seeds", "tracking", "report", "scale")
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
    """The database file of a `sqlite:///` URI (absolute; relative paths from the project
    root, `project_root()`), or None for any other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    return (Path(path) if path.startswith("/") else project_root() / path).resolve()


# Set by DVC for every command it runs: the checkout's root, also when `dvc exp run --queue`
# runs the command in a temporary copy (dvc/repo/experiments/queue/base.py records it when
# the experiment is queued, before the workspace is copied).
DVC_ROOT_ENV = "DVC_ROOT"


def project_root() -> Path:
    """What a relative tracking location is relative to: DVC's DVC_ROOT where DVC runs the
    stage, otherwise the working directory (every stage runs in the project root)."""
    root = os.environ.get(DVC_ROOT_ENV)
    return Path(root) if root else Path.cwd()


def resolved_uri(uri: str) -> str:
    """A relative `sqlite:///` URI made absolute against the project root. MLflow caches
    one store per URI string in a process, and SQLite resolves a relative path when a new
    connection opens, so a relative URI could reach another directory's database after a
    chdir; other URIs are returned unchanged."""
    database = sqlite_database_path(uri)
    if database is None:
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return f"sqlite:///{database}" + (f"?{query}" if query else "")


def artifacts_root(uri: str) -> Path | None:
    """`mlartifacts/` beside a SQLite database, or None for any other store."""
    database = sqlite_database_path(uri)
    return None if database is None else database.parent / ARTIFACTS_DIRNAME


def artifact_location(uri: str, experiment: str) -> str | None:
    """The artifact location a new experiment records: `mlflow-artifacts:/<experiment>` for a
    SQLite store (resolved against `artifacts_root` when used, so it moves with the checkout);
    None lets a server decide."""
    if sqlite_database_path(uri) is None:
        return None
    return f"{PROXIED_ARTIFACTS_SCHEME}:/{re.sub(r'[^A-Za-z0-9._-]+', '_', experiment)}"


def local_artifact_dir(uri: str, artifact_uri: str) -> Path | None:
    """Where a run's `mlflow-artifacts:` URI lives on disk for a SQLite store: under
    `artifacts_root(uri)`, as `mlflow server --artifacts-destination` resolves it. None for
    other URIs (a file URI made by an earlier version, or a server's store), which MLflow's own
    artifact repositories handle."""
    root = artifacts_root(uri)
    parsed = urllib.parse.urlparse(artifact_uri)
    if root is None or parsed.scheme != PROXIED_ARTIFACTS_SCHEME:
        return None
    relative = Path(parsed.path.lstrip("/"))
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"artifact URI {artifact_uri!r} leaves {root}")
    return root / relative


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


# ---- tracking never fails a stage ---------------------------------------------------------
# A run's MLflow record describes the work; it is not the work. A stage whose outputs are
# complete must not fail because the store could not take its record: every tracking error
# past the retries becomes one warning, and the run, where it exists, is tagged with what
# went wrong (and ended FAILED where it was being ended), so the UI shows it incomplete.

TRACKING_ERROR_TAG = "cfqa.tracking_error"
DATASET_ATTEMPTS = 5
_MAX_TAG_CHARS = 5000   # MLflow's limit on a tag value is 8000 characters
# How each database names a broken unique constraint: SQLite, PostgreSQL, MySQL/MariaDB.
_UNIQUE_CONFLICT = ("UNIQUE constraint failed", "violates unique constraint", "Duplicate entry")


def is_unique_conflict(error: BaseException) -> bool:
    """True if the error, or one it was raised from, is a unique-constraint violation (an
    insert that lost a race with an identical one)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if type(current).__name__ == "IntegrityError" or any(text in str(current) for text in _UNIQUE_CONFLICT):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def log_datasets(client: MlflowClient, run_id: str, inputs: list, attempts: int = DATASET_ATTEMPTS) -> None:
    """The run's dataset inputs, idempotent under concurrency. MLflow's `log_inputs` looks each
    dataset up (experiment, name, digest), inserts the missing ones and links them to the run, in
    one transaction. Two jobs that log the same new dataset at once both miss it in the lookup
    and both insert it: the second insert breaks the unique constraint and its transaction is
    rolled back whole. That dataset is then there, so the call is made again: its lookup finds
    it, and only the run's links are inserted (links already made are skipped by MLflow)."""
    for attempt in range(1, attempts + 1):
        try:
            with_lock_retry(lambda: client.log_inputs(run_id, datasets=inputs), "log datasets")
            return
        except Exception as error:
            if attempt == attempts or not is_unique_conflict(error):
                raise
            log.info("datasets of MLflow run %s: another job logged the same dataset at this moment "
                     "(attempt %d/%d); linking the one it stored", run_id, attempt, attempts)


def _error_text(error: BaseException) -> str:
    """`Type: message` on one line, credentials masked."""
    text = " ".join(str(error).split()) or "(no message)"
    return redact(f"{type(error).__name__}: {text}")


def mark_tracking_error(client: MlflowClient | None, run_id: str | None, what: str, error: BaseException,
                        status: str | None = None) -> None:
    """Best effort: the run tagged `cfqa.tracking_error` = what failed and why (and ended with
    `status`, if given). The store may be what failed, so this never raises."""
    if client is None or run_id is None:
        return
    with contextlib.suppress(Exception):
        client.set_tag(run_id, TRACKING_ERROR_TAG, f"{what}: {_error_text(error)}"[:_MAX_TAG_CHARS])
    if status is not None:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, status)


@contextlib.contextmanager
def failures_as_warnings(what: str) -> Iterator[None]:
    """Runs a stage's tracking: an error is logged as one warning and the stage goes on (an
    interrupt still stops it). The functions inside mark their run where they have one."""
    try:
        yield
    except Exception as error:
        log.warning("MLflow: %s failed (%s); the stage's outputs are complete and it goes on without "
                    "that record; the run, where it exists, carries the tag %s", what, _error_text(error),
                    TRACKING_ERROR_TAG)


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
    processes run them at once. The experiment is marked as model development, so the UI opens
    on its runs rather than on GenAI traces."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _quiet_mlflow()
    name, uri = tracking.experiment, resolved_uri(tracking.uri)
    with _store_lock(uri):
        database = sqlite_database_path(uri)
        if database is not None and not database.exists():
            # A new store's schema is built by many migrations; one cut short (a full disk, a
            # kill) leaves a database no later run can open. Build it aside, rename it complete.
            with atomic_path(database) as fresh:
                store = MlflowClient(tracking_uri=f"sqlite:///{fresh}")
                store.search_experiments()
                store._tracking_client.store.engine.dispose()
        client = with_lock_retry(lambda: MlflowClient(tracking_uri=uri), "open tracking store")
        experiment = with_lock_retry(lambda: client.get_experiment_by_name(name), "get experiment")
        if experiment is None:
            location = artifact_location(uri, name)
            try:
                experiment_id = with_lock_retry(lambda: client.create_experiment(
                    name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}),
                    "create experiment")
                log.info("created MLflow experiment %r (artifacts in %s)", name,
                         artifacts_root(uri) or "the server's default location")
                _pin_runs_view(client, experiment_id)
                return client, experiment_id
            except MlflowException as error:   # a remote store: created meanwhile by another job
                if getattr(error, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)
        elif EXPERIMENT_KIND_TAG not in experiment.tags:
            with_lock_retry(lambda: client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND), "tag experiment")
        if experiment.lifecycle_stage == "active":
            _pin_runs_view(client, experiment.experiment_id, experiment)
    if experiment.lifecycle_stage != "active":
        raise RuntimeError(f"MLflow experiment {name!r} in {uri} is deleted; restore it "
                           f"(`mlflow experiments restore`) or set another tracking.experiment")
    if artifacts_root(uri) is not None and experiment.artifact_location.startswith("file:"):
        log.warning("MLflow experiment %r records the absolute artifact location %s: artifacts of new "
                    "runs go there even from a copied or moved checkout; set another tracking.experiment "
                    "for one that moves with the checkout", name, experiment.artifact_location)
    return client, experiment.experiment_id


def _pin_runs_view(client: MlflowClient, experiment_id: str, experiment=None) -> None:
    """The experiment opens on this project's runs view (cfqa.tracking_view); never fatal."""
    from cfqa.tracking_view import pin_runs_view

    try:
        pin_runs_view(client, experiment or client.get_experiment(experiment_id))
    except Exception as error:
        log.warning("MLflow experiment %s: could not pin the runs view (%s)", experiment_id, error)


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


def _same_configuration(client: MlflowClient, experiment_id: str, name: str, group: str,
                        config_hash: str | None) -> list:
    """Active runs called `name` in pipeline run `group` of configuration `config_hash` (of any
    configuration when None: a run logged without one): what a complete rerun replaces. Runs
    of other configurations stay, so every configuration keeps its runs."""
    runs = _runs_named(client, experiment_id, name, group)
    if config_hash is None:
        return runs
    return [run for run in runs if run.data.tags.get(CONFIG_HASH_TAG) == config_hash]


def _extend_parent(client: MlflowClient, uri: str, run_id: str) -> None:
    """The parent run spans the pipeline: its end moves to now, when `run_id` (its child) has
    just ended. Under the store's file lock, so two jobs cannot move it back."""
    run = with_lock_retry(functools.partial(client.get_run, run_id), "read run")
    parent_id = run.data.tags.get(PARENT_RUN_TAG)
    if parent_id is None:
        return
    now_ms = int(time.time() * 1000)
    with _store_lock(uri):
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


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    """What tells one (method, seed) run from another: its pipeline run, method, seed, and a hash
    of the method's own settings (after the learning rate `cfqa tune` chose; not the seed)
    within that pipeline run: the configuration, shared by its seeds' runs. Train tags its run
    with these; evaluate finds the run by them."""
    method: str
    seed: int
    pipeline: PipelineRun
    config_hash: str

    @property
    def run_name(self) -> str:
        return f"{self.method}-seed{self.seed}"

    @property
    def tags(self) -> dict[str, str]:
        return {"method": self.method, "seed": str(self.seed), PIPELINE_RUN_TAG: self.pipeline.id,
                CONFIG_HASH_TAG: self.config_hash}


def run_identity(pipeline: PipelineRun, method: str, seed: int, method_params: Mapping[str, Any]) -> RunIdentity:
    """`method_params` is the params slice train records (`run.params` of train.json): train
    hashes the slice it is about to record, evaluate the slice read back, and both encode it
    the same way (msgspec: tuples and lists alike, keys sorted). The slice's `train.seed` is
    left out of the hash (`configuration`): the seeds of one configuration share it."""
    encoded = msgspec.json.encode({"pipeline": pipeline.id, "method": configuration(method_params)}, order="sorted")
    return RunIdentity(method=method, seed=int(seed), pipeline=pipeline,
                       config_hash=hashlib.sha256(encoded).hexdigest()[:12])


def configuration(method_params: Mapping[str, Any]) -> dict[str, Any]:
    """A method's params slice without the run's seed (`train.seed`)."""
    params = dict(method_params)
    if isinstance(params.get("train"), Mapping):
        params["train"] = {key: value for key, value in params["train"].items() if key != "seed"}
    return params


def source_tags(entry_point: str) -> dict[str, str]:
    """What MLflow shows as a run's Source and User, the git commit (with a dirty flag) and the
    DVC experiment the stage ran in (`dvc exp run` names it in DVC_EXP_NAME)."""
    import getpass

    from mlflow.entities import SourceType
    from mlflow.utils import mlflow_tags

    commit, dirty = git_commit(), git_dirty()
    tags = {mlflow_tags.MLFLOW_SOURCE_NAME: entry_point,
            mlflow_tags.MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL),
            MLFLOW_GIT_COMMIT: commit, "git_commit": commit}
    if dirty is not None:
        tags[MLFLOW_GIT_DIRTY] = tags["git_dirty"] = str(dirty).lower()
    with contextlib.suppress(Exception):  # no user name in some containers
        tags[mlflow_tags.MLFLOW_USER] = getpass.getuser()
    if os.environ.get(DVC_EXPERIMENT_ENV):
        tags["dvc_experiment"] = os.environ[DVC_EXPERIMENT_ENV]
    return tags


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def dataset_inputs(datasets: Mapping[str, Iterable[Path]], root: Path | None = None) -> list:
    """MLflow dataset inputs, one per data file: named by its split and variant ("train/factual"),
    its source the file's path (relative to the project root where it lies under it, so the
    record moves with the checkout), its digest the start of its sha256, and tagged with the
    context it was read in (training, validation, evaluation) and the whole sha256."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    root = (root or Path.cwd()).resolve()
    inputs = []
    for context, paths in datasets.items():
        for path in map(Path, paths):
            absolute = path.resolve()
            shown = absolute.relative_to(root) if absolute.is_relative_to(root) else absolute
            sha = file_sha256(absolute)
            dataset = MetaDataset(LocalArtifactDatasetSource(shown.as_posix()),
                                  name=f"{path.parent.name}/{path.stem}", digest=sha[:DATASET_DIGEST_CHARS])
            inputs.append(DatasetInput(dataset._to_mlflow_entity(),
                                       tags=[InputTag(DATASET_CONTEXT_TAG, context), InputTag("sha256", sha)]))
    return inputs


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


def _metric_entities(metrics: Mapping[str, Any], step_metrics: Iterable[Mapping[str, Any]], now_ms: int,
                     logged: set[tuple[str, int]] = frozenset()) -> list:
    """Final metrics at step 0 and per-step metrics, numbers only, without (key, step) pairs
    already `logged`."""
    from mlflow.entities import Metric

    entities = [Metric(key, value, now_ms, 0) for k, v in flatten(metrics).items()
                if (value := _metric_value(v)) is not None and ((key := _metric_name(k, v)), 0) not in logged]
    for row in step_metrics:
        step = int(row["step"])
        entities += [Metric(_key(k), value, now_ms, step) for k, v in row.items()
                     if k != "step" and (value := _metric_value(v)) is not None
                     and (_key(k), step) not in logged]
    return entities


def _metric_name(key: str, value: Any) -> str:
    """A yes/no value is logged as 0/1 under a name that says so (`train.lr_selected_flag`):
    `train.lr_selected = 1.0` would read like a learning rate."""
    return f"{key}_flag" if isinstance(value, bool) else key


def _log_batches(client: MlflowClient, run_id: str, params: list, metrics: list) -> None:
    for batch in _chunks(params, _MAX_PARAMS_PER_BATCH):
        with_lock_retry(functools.partial(client.log_batch, run_id, params=batch, synchronous=True), "log params")
    for batch in _chunks(metrics, _MAX_METRICS_PER_BATCH):
        with_lock_retry(functools.partial(client.log_batch, run_id, metrics=batch, synchronous=True),
                        "log metrics")


def _logged_steps(client: MlflowClient, run_id: str, keys: Iterable[str]) -> set[tuple[str, int]]:
    """(key, step) pairs the run already holds for `keys`."""
    logged: set[tuple[str, int]] = set()
    for key in keys:
        history = with_lock_retry(functools.partial(client.get_metric_history, run_id, key), "read metric history")
        logged |= {(key, metric.step) for metric in history}
    return logged


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
        step_keys = {_key(k) for row in step_metrics for k in row if k != "step"}
        logged = {(key, 0) for key in held.metrics} | _logged_steps(client, run_id, step_keys)
        for key, value in run_tags.items():
            with_lock_retry(functools.partial(client.set_tag, run_id, key, value), "tag run")
    try:
        param_entities = [Param(k, value) for k, v in flatten(params).items()
                          if held_params.get(k) != (value := _param_value(v))]
        metric_entities = _metric_entities(metrics, step_metrics, int(time.time() * 1000), logged)
        _log_batches(client, run_id, param_entities, metric_entities)
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
        _extend_parent(client, uri, run_id)
    log.info("logged MLflow run %s (%s%s): %d params, %d metric values, %d artifacts%s",
             run_id, run_name, f", pipeline run {pipeline.id}" if pipeline else "", len(param_entities),
             len(metric_entities), len(artifacts), f"; replaced {', '.join(replaced)}" if replaced else "")
    return run_id


# ---- the train stage's side ---------------------------------------------------------------

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
        metrics = _metric_entities({}, [point], int(time.time() * 1000))
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
            keys = {_key(k) for row in curve for k in row if k != "step"}
            logged = _logged_steps(self.client, self.run_id, keys)
            started_ms = self.client.get_run(self.run_id).info.start_time
            _log_batches(self.client, self.run_id, [],
                         _metric_entities({TRAIN_TIME: (now_ms - started_ms) / 1000}, curve, now_ms, logged))

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

        _log_batches(client, run_id, [Param(k, _param_value(v)) for k, v in flatten(params).items()], [])
        log_datasets(client, run_id, dataset_inputs(datasets))
        run.start_system_metrics()
    except Exception as error:       # training goes on; evaluate logs what the run lacks
        log.warning("MLflow run %s: logging its params and datasets failed (%s); training goes on and "
                    "evaluate logs what the run lacks", run_id, _error_text(error))
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


# ---- the evaluate stage's side ------------------------------------------------------------

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


def run_params(method: str, registry_method: str, backbone: str, seed: int, method_params: Mapping[str, Any]) -> dict:
    """The params of a (method, seed) run, the same whether train or evaluate logs them."""
    return {"method": method, "registry_method": registry_method, "backbone": backbone, "seed": seed,
            "options": method_params.get("options") or {}, "train": method_params.get("train") or {}}


def log_results_dir(tracking: TrackingConfig, results_dir: Path, *, method: str,
                    pipeline: PipelineRun | None = None, extra_artifacts: Iterable[Path] = (),
                    datasets: Mapping[str, Iterable[Path]] | None = None) -> str:
    """Logs one (method, seed) run's results directory (train.json, train_curve.csv,
    metrics.json and the other records beside them; read through cfqa.contract) into the run the train stage opened for it,
    ending that run; or, where there is none, as a new run named `{method}-seed{seed}`. Tagged
    with the hash of the data it trained on and of its backbone, under `pipeline`."""
    files = MethodFiles(Path(results_dir))
    train = read_train_record(files.train_record, method)
    metrics = read_metrics(files.metrics, method)
    curve = read_curve(files.train_curve) if files.train_curve.is_file() else []
    params = run_params(method, train.registry_method, train.backbone, train.seed, train.run.params)
    train_metrics = msgspec.to_builtins(train)
    evaluation = msgspec.to_builtins(metrics)
    for record in (train_metrics, evaluation):      # logged as params and tags, not as metrics
        for key in ("run", "method", "seed", "schema_version"):
            record.pop(key, None)
    # The run's records and curve, whatever the contract names them; predictions stay in DVC.
    artifacts = sorted(path for path in Path(results_dir).iterdir()
                       if path.is_file() and path.suffix in ARTIFACT_SUFFIXES)
    tags = {"method": method, "seed": train.seed, "data_hash": train.run.data_sha256 or "unknown",
            "backbone_hash": train.run.backbone_sha256 or "unknown", "registry_method": train.registry_method,
            "backbone": train.backbone, "cpu_model": train.run.hardware.cpu_model, "blas": train.run.hardware.blas,
            # The code the weights were trained with, which evaluate's checkout may not be.
            "git_commit": train.run.git_commit, MLFLOW_GIT_COMMIT: train.run.git_commit}
    if train.run.git_dirty is not None:
        tags["git_dirty"] = tags[MLFLOW_GIT_DIRTY] = str(train.run.git_dirty).lower()
    if metrics.family is not None:
        tags["family"] = metrics.family     # t5 | gpt_neo: to put families side by side in the MLflow UI
    run_id = client = None
    if pipeline is not None:
        identity = run_identity(pipeline, method, train.seed, train.run.params)
        tags[CONFIG_HASH_TAG] = identity.config_hash
        client, experiment_id = open_experiment(tracking)
        run_id = find_training_run(client, experiment_id, identity)
        if run_id is None:
            log.info("no open MLflow run of %s from its training (config %s): creating one",
                     identity.run_name, identity.config_hash)
    start_ms, end_ms, times = work_times(client, run_id, train.cost.wall_time_s, metrics.wall_time_s,
                                         int(time.time() * 1000))
    return log_method_run(tracking, run_name=f"{method}-seed{train.seed}", params=params,
                          metrics={**headline_metrics(headline(train, metrics)), **times, "train": train_metrics,
                                   **evaluation},
                          step_metrics=[msgspec.to_builtins(row) for row in curve],
                          artifacts=artifacts + [Path(a) for a in extra_artifacts], tags=tags, pipeline=pipeline,
                          run_id=run_id, datasets=datasets, start_ms=start_ms, end_ms=end_ms)
