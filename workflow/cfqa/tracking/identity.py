"""What tells one (method, seed) run from another, and where it came from.

A configuration is what `config_hash` hashes: the pipeline run and the method's own
settings, not the seed, so the UI groups a configuration's seeds (see cfqa.tracking.view,
the runs view every experiment is given). The source tags name the entry point, the git
commit and the DVC experiment; environment variables are never logged (only DVC's
experiment name is read, as a tag).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from typing import Any, Mapping

import msgspec

from cfqa.contract.run_info import git_commit, git_dirty
from cfqa.tracking.pipeline import PIPELINE_RUN_TAG, PipelineRun

CONFIG_HASH_TAG = "config_hash"
# Set by `dvc exp run` for the command it runs (dvc.env.DVC_EXP_NAME).
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"   # mlflow.utils.mlflow_tags (importing it imports mlflow)
MLFLOW_GIT_DIRTY = "mlflow.source.git.dirty"


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


def run_params(method: str, registry_method: str, backbone: str, seed: int, method_params: Mapping[str, Any]) -> dict:
    """The params of a (method, seed) run, the same whether train or evaluate logs them."""
    return {"method": method, "registry_method": registry_method, "backbone": backbone, "seed": seed,
            "options": method_params.get("options") or {}, "train": method_params.get("train") or {}}
