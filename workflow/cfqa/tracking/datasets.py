"""The data files a run read, as MLflow dataset inputs, and their logging, idempotent when
jobs log the same new dataset at once."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from cfqa.io.logs import get_logger
from cfqa.tracking.locking import is_unique_conflict, with_lock_retry

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = get_logger(__name__)

DATASET_ATTEMPTS = 5
DATASET_CONTEXT_TAG = "mlflow.data.context"   # mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT
# MLflow's dataset digest column holds 36 characters: the digest is the start of the file's
# sha256; the whole hash is the input's `sha256` tag.
DATASET_DIGEST_CHARS = 32


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
