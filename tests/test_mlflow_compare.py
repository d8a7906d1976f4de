"""Comparing configurations in MLflow (SQLite store in a temporary project root): a run of
another configuration stays beside the earlier ones while a rerun of the same one replaces
it; a configuration's seeds share one `config_hash`; a run's duration is its training and
evaluation time with the wait between recorded apart; the parent run spans its children;
stages DVC runs in a temporary copy (`dvc exp run --queue`) log into the checkout's store;
every experiment opens on the pinned runs view."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from cfqa.config import TrackingConfig
from cfqa.contract import Headline
from cfqa.tracking import view as tracking_view
from cfqa.tracking.experiment import open_experiment
from cfqa.tracking.identity import RunIdentity, run_identity
from cfqa.tracking.method_run import log_method_run
from cfqa.tracking.pipeline import PipelineRun
from cfqa.tracking.store import DVC_ROOT_ENV, local_artifact_dir, sqlite_database_path
from cfqa.tracking.training_run import TrainingRun, find_training_run, start_training_run
from cfqa.tracking.work_times import work_times

TRACKING = TrackingConfig(uri="sqlite:///mlflow.db", experiment="cfqa-compare")
GROUP = PipelineRun(id="feed00000000", params={"train": {"lr": 0.001}})
RANK_8 = {"options": {"r": 8}, "train": {"lr": 0.01}}
RANK_16 = {"options": {"r": 16}, "train": {"lr": 0.01}}


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A fresh store's schema, migrated once and copied into each test's root."""
    root = tmp_path_factory.mktemp("store")
    MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").search_experiments()
    return root / "mlflow.db"


@pytest.fixture
def project_root(tmp_path, monkeypatch, empty_store) -> Path:
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DVC_ROOT_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    return tmp_path


def _client(root: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def _runs(root: Path, experiment: str = TRACKING.experiment) -> list:
    client = _client(root)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], run_view_type=ViewType.ALL)


def _identity(config: dict, seed: int) -> RunIdentity:
    return run_identity(GROUP, "lora", seed, {**config, "train": {**config["train"], "seed": seed}})


def _train(root: Path, identity: RunIdentity, config: dict) -> TrainingRun:
    data = root / "data" / "variants" / "train" / "factual.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text('{"question": "q"}\n')
    return start_training_run(TRACKING, identity, params=config, datasets={"training": [data]})


def _evaluate(identity: RunIdentity, em: float, *, config: dict = RANK_8, evaluate_s: float = 0.5) -> str:
    """What log_results_dir does with the run train opened, once it has read the records."""
    client, experiment_id = open_experiment(TRACKING)
    run_id = find_training_run(client, experiment_id, identity)
    start_ms, end_ms, times = work_times(client, run_id, train_wall_s=9.0, evaluate_s=evaluate_s,
                                         now_ms=int(time.time() * 1000))
    return log_method_run(
        TRACKING, run_name=identity.run_name, params=config, metrics={"em": em, **times},
        step_metrics=[], artifacts=[], tags={"method": "lora", "seed": identity.seed, "config_hash": identity.config_hash},
        pipeline=GROUP, run_id=run_id, start_ms=start_ms, end_ms=end_ms)


def _train_and_evaluate(root: Path, config: dict, seed: int, em: float) -> str:
    identity = _identity(config, seed)
    _train(root, identity, config)
    return _evaluate(identity, em, config=config)


def test_the_seeds_of_one_configuration_share_its_hash():
    assert _identity(RANK_8, 0).config_hash == _identity(RANK_8, 1).config_hash
    assert _identity(RANK_8, 0).config_hash != _identity(RANK_16, 0).config_hash
    assert _identity(RANK_8, 0).tags["seed"] == "0" and _identity(RANK_8, 1).tags["seed"] == "1"


def test_another_configuration_keeps_the_earlier_runs_and_a_rerun_replaces_its_own(project_root):
    rank8 = {seed: _train_and_evaluate(project_root, RANK_8, seed, 60.0 + seed) for seed in (0, 1)}
    rank16 = _train_and_evaluate(project_root, RANK_16, 0, 70.0)      # `dvc exp run -S ...r=16`
    rerun = _train_and_evaluate(project_root, RANK_8, 0, 61.0)        # r = 8, seed 0 again

    runs = {run.info.run_id: run for run in _runs(project_root)}
    active = {run_id for run_id, run in runs.items() if run.info.lifecycle_stage == "active"}
    assert runs[rank8[0]].info.lifecycle_stage == "deleted"          # replaced by its rerun
    assert {rank8[1], rank16, rerun} <= active                         # r = 8 beside r = 16
    hashes = {run_id: runs[run_id].data.tags["config_hash"] for run_id in (rank8[1], rank16, rerun)}
    assert hashes[rank8[1]] == hashes[rerun] != hashes[rank16]
    (parent,) = [run for run in runs.values() if run.info.run_name == GROUP.run_name]
    assert {runs[r].data.tags["mlflow.parentRunId"] for r in (rank8[1], rank16, rerun)} == {parent.info.run_id}


def test_duration_is_training_and_evaluation_and_the_wait_is_apart(project_root):
    identity = _identity(RANK_8, 0)
    training = _train(project_root, identity, RANK_8)
    time.sleep(0.3)                                       # training
    training.training_done([])
    time.sleep(1.0)                                       # queued behind other jobs
    run_id = _evaluate(identity, 60.0, evaluate_s=0.2)

    run = _client(project_root).get_run(run_id)
    train_s = run.data.metrics["time/train_s"]
    assert 0.3 <= train_s < 1.0
    assert run.data.metrics["time/evaluate_s"] == 0.2
    assert run.data.metrics["time/queue_wait_s"] >= 1.0 - 0.2
    assert run.info.end_time - run.info.start_time == round((train_s + 0.2) * 1000)
    # The parent spans the pipeline: from its first child's training to the last end.
    (parent,) = [r for r in _runs(project_root) if r.info.run_name == GROUP.run_name]
    assert parent.info.start_time <= run.info.start_time and parent.info.end_time >= run.info.end_time + 800


def test_a_run_evaluate_creates_is_dated_back_by_its_work():
    start_ms, end_ms, times = work_times(None, None, train_wall_s=12.5, evaluate_s=2.5, now_ms=100_000)
    assert (start_ms, end_ms) == (85_000, 100_000)
    assert times == {"time/train_s": 12.5, "time/evaluate_s": 2.5}


def test_a_stage_dvc_runs_in_a_temporary_copy_logs_into_the_checkout(project_root, tmp_path_factory, monkeypatch):
    """`dvc exp run --queue` runs the stage in a copy of the workspace (which DVC deletes) and
    names the checkout in DVC_ROOT: the relative store location resolves there."""
    copy = tmp_path_factory.mktemp("dvc-exp-tmp") / "workspace"
    copy.mkdir()
    monkeypatch.chdir(copy)
    monkeypatch.setenv(DVC_ROOT_ENV, str(project_root))
    assert sqlite_database_path(TRACKING.uri) == (project_root / "mlflow.db").resolve()
    identity = _identity(RANK_16, 0)
    _train(copy, identity, RANK_16)
    artifact = copy / "metrics.json"
    artifact.write_text("{}")
    client, experiment_id = open_experiment(TRACKING)
    run_id = log_method_run(TRACKING, run_name=identity.run_name, params={}, metrics={"em": 1.0},
                            step_metrics=[], artifacts=[artifact], tags={"config_hash": identity.config_hash},
                            pipeline=GROUP, run_id=find_training_run(client, experiment_id, identity))
    assert not (copy / "mlflow.db").exists() and not (copy / "mlartifacts").exists()
    (run,) = [r for r in _runs(project_root) if r.info.run_id == run_id]
    assert run.info.status == "FINISHED"
    stored = local_artifact_dir(TRACKING.uri, run.info.artifact_uri)
    assert stored.is_relative_to(project_root.resolve()) and (stored / "metrics.json").is_file()
    # The dataset keeps its path relative to the workspace it was read in.
    assert json.loads(run.inputs.dataset_inputs[0].dataset.source) == {"uri": "data/variants/train/factual.jsonl"}


def test_every_experiment_opens_on_the_pinned_runs_view(project_root):
    client, experiment_id = open_experiment(TRACKING)
    state = json.loads(client.get_experiment(experiment_id).tags[tracking_view.SHARED_VIEW_TAG])
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "method"},
                                               {"mode": "tag", "groupByData": "config_hash"}]
    assert state["orderByKey"] == "metrics.`Headline/cf_em_pct`" and not state["orderByAsc"]
    assert state["selectedColumns"][:5] == ["tags.`seed`", "tags.`config_hash`", "tags.`dvc_experiment`",
                                            "metrics.`Headline/cf_em_pct`", "metrics.`Headline/f_em_pct`"]
    assert "metrics.`Headline/memorization_test_pct`" in state["selectedColumns"]
    assert state["columnOrder"] == ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *state["selectedColumns"]]
    assert tracking_view.runs_url("http://127.0.0.1:5000", experiment_id) == (
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?viewStateShareKey=cfqa-runs"
        "&workflowType=machine_learning")
    # An experiment made before the view existed gets it when next opened.
    client.delete_experiment_tag(experiment_id, tracking_view.SHARED_VIEW_TAG)
    open_experiment(TRACKING)
    assert tracking_view.SHARED_VIEW_TAG in client.get_experiment(experiment_id).tags
    assert tracking_view.experiment_id(project_root / "mlflow.db", TRACKING.experiment) == experiment_id
    assert tracking_view.experiment_id(project_root / "absent.db", TRACKING.experiment) is None


def test_headline_metrics_sort_before_every_other_key():
    record = Headline(test_contextual_em_pct={"factual": 200 / 3, "counterfactual": None},
                      memorization_ratio_pct={"test": 5.0}, trainable_params=1234, peak_memory_bytes=None,
                      step_time_s=0.123456)
    metrics = tracking_view.headline_metrics(record)
    assert metrics == {"Headline/f_em_pct": 66.67, "Headline/memorization_test_pct": 5.0,    # 2 decimals for the table
                       "Headline/trainable_params": 1234.0, "Headline/step_time_s": 0.123456}
    # The UI sorts keys by code point (JavaScript's default sort), as sorted() does.
    others = ["by_type.test.factual.LOCATION.contextual_em_pct", "inference.per_example_ms", "sets.test.factual.n",
              "system/cpu_utilization_percentage", "time/train_s", "train.params.trainable", "wall_time_s"]
    assert sorted([*others, *metrics])[:len(metrics)] == sorted(metrics)
