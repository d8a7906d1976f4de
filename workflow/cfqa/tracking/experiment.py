"""The store opened and the experiment got or created, once, under the store's file lock,
marked as model development and given this project's runs view."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cfqa.io.atomic_io import atomic_path
from cfqa.config import TrackingConfig
from cfqa.io.logs import get_logger
from cfqa.tracking.locking import store_lock, with_lock_retry
from cfqa.tracking.store import artifact_location, artifacts_root, resolved_uri, sqlite_database_path
from cfqa.tracking.view import pin_runs_view

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = get_logger(__name__)

# The UI shows runs, not GenAI traces, first for this kind (MLflow 3 reads the tag; 3.17's UI
# also needs its "Machine learning" switch, or `?workflowType=machine_learning` in the URL).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def _quiet_mlflow() -> None:
    """MLflow and alembic log every schema migration at INFO; keep stage logs to our lines."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def open_experiment(tracking: TrackingConfig) -> tuple[MlflowClient, str]:
    """(client, experiment id): the store is opened and the experiment got or created once,
    under a file lock. Opening a new SQLite store runs schema migrations, which fail when two
    processes run them at once. The experiment is marked as model development, so the UI opens
    on its runs rather than on GenAI traces."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _quiet_mlflow()
    name, uri = tracking.experiment, resolved_uri(tracking.uri)
    with store_lock(uri):
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
    """The experiment opens on this project's runs view (cfqa.tracking.view); never fatal."""
    try:
        pin_runs_view(client, experiment or client.get_experiment(experiment_id))
    except Exception as error:
        log.warning("MLflow experiment %s: could not pin the runs view (%s)", experiment_id, error)
