"""The evaluate stage's side: one (method, seed) results directory, read through
cfqa.contract, logged into the run its training opened (or a new one) and ended."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Mapping

import msgspec

from cfqa.config import TrackingConfig
from cfqa.contract import MethodFiles, read_curve, read_metrics, read_train_record
from cfqa.analysis.headline import headline
from cfqa.io.logs import get_logger
from cfqa.tracking.experiment import open_experiment
from cfqa.tracking.identity import CONFIG_HASH_TAG, MLFLOW_GIT_COMMIT, MLFLOW_GIT_DIRTY, run_identity, run_params
from cfqa.tracking.method_run import log_method_run
from cfqa.tracking.pipeline import PipelineRun
from cfqa.tracking.training_run import find_training_run
from cfqa.tracking.view import headline_metrics
from cfqa.tracking.work_times import work_times

log = get_logger(__name__)

ARTIFACT_SUFFIXES = (".json", ".csv")


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
