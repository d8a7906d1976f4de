"""MLflow tracking into a SQLite store in a temporary project root: what one run holds when
read back, artifacts beside the database, and several processes logging at once."""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cfqa import config as config_module
from cfqa.config import PROJECT_ROOT, TrackingConfig
from cfqa import tracking
from cfqa.contract import read_curve, read_metrics, read_train_record
from cfqa.contract.run_info import git_commit, git_dirty

TRACKING = TrackingConfig(uri="sqlite:///mlflow.db", experiment="cfqa-test")


def _client(root: Path) -> MlflowClient:
    # An absolute URI: MLflow caches stores by URI string, and the tests change directory.
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A fresh store's schema, migrated once (seconds) and copied into each test's root."""
    root = tmp_path_factory.mktemp("store")
    _client(root).search_experiments()
    return root / "mlflow.db"


@pytest.fixture
def project_root(tmp_path, monkeypatch, empty_store) -> Path:
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _runs(client: MlflowClient) -> dict:
    experiment = client.get_experiment_by_name(TRACKING.experiment)
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def _log(tmp_path: Path, method: str, seed: int, em: float, pipeline: tracking.PipelineRun | None = None) -> str:
    metrics_file = tmp_path / f"{method}-metrics.json"
    metrics_file.write_text(json.dumps({"contextual_em": em}))
    return tracking.log_method_run(
        TRACKING, run_name=f"{method}-seed{seed}",
        params={"method": method, "seed": seed, "options": {"r": 8, "target_modules": ["q", "v"]},
                "train": {"lr": 0.005}},
        metrics={"sets": {"test": {"factual": {"contextual_em": em, "n": 120}}},
                 "cost": {"peak_memory_bytes": 1024, "memory_measure": "text is not a metric"},
                 "stopped_early": True},
        step_metrics=[{"step": 10, "train_loss": 2.0, "val_loss": None},
                      {"step": 20, "train_loss": 1.5, "val_loss": 1.7},
                      {"step": 30, "train_loss": 1.2, "val_loss": None}],
        artifacts=[metrics_file],
        tags={"method": method, "seed": seed, "data_hash": "abc123"},
        pipeline=pipeline,
    )


def test_two_runs_read_back(project_root):
    tmp_path = project_root
    full_id = _log(tmp_path, "full", 0, 81.5)
    lora_id = _log(tmp_path, "lora", 1, 77.25)
    assert full_id != lora_id

    client = _client(tmp_path)
    experiments = [e for e in client.search_experiments() if e.name == TRACKING.experiment]
    assert len(experiments) == 1
    assert experiments[0].artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
    runs = _runs(client)
    assert set(runs) == {"full-seed0", "lora-seed1"}

    lora = runs["lora-seed1"]
    assert lora.info.status == "FINISHED"
    assert lora.data.params["options.r"] == "8"
    assert lora.data.params["options.target_modules"] == '["q", "v"]'
    assert lora.data.params["train.lr"] == "0.005"
    assert lora.data.metrics["sets.test.factual.contextual_em"] == 77.25
    assert runs["full-seed0"].data.metrics["sets.test.factual.contextual_em"] == 81.5
    assert lora.data.metrics["stopped_early"] == 1.0
    assert "cost.memory_measure" not in lora.data.metrics
    history = client.get_metric_history(lora_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(10, 2.0), (20, 1.5), (30, 1.2)]
    assert [(m.step, m.value) for m in client.get_metric_history(lora_id, "val_loss")] == [(20, 1.7)]

    assert lora.data.tags["data_hash"] == "abc123"
    assert lora.data.tags["method"] == "lora" and lora.data.tags["seed"] == "1"
    assert lora.data.tags["git_commit"] == "unknown"            # tmp_path is not a git checkout

    assert [a.path for a in client.list_artifacts(lora_id)] == ["lora-metrics.json"]
    local = client.download_artifacts(lora_id, "lora-metrics.json", str(tmp_path / "download"))
    assert json.loads(Path(local).read_text()) == {"contextual_em": 77.25}
    assert lora.info.artifact_uri.startswith((tmp_path / "mlartifacts").resolve().as_uri())
    assert (tmp_path / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()


def _all_runs(client: MlflowClient) -> list:
    from mlflow.entities import ViewType

    experiment = client.get_experiment_by_name(TRACKING.experiment)
    return client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)


def test_runs_are_grouped_under_one_parent_per_pipeline_run_and_a_rerun_replaces(project_root):
    first = tracking.PipelineRun(id="aaaa11112222", params={"train": {"lr": 0.001, "mixture": ["factual"]}})
    second = tracking.PipelineRun(id="bbbb33334444", params={"train": {"lr": 0.003, "mixture": ["factual"]}})
    replaced = _log(project_root, "lora", 0, 70.0, first)
    kept_seed1 = _log(project_root, "lora", 1, 71.0, first)
    rerun = _log(project_root, "lora", 0, 72.0, first)             # the same (method, seed, pipeline run)
    other_group = _log(project_root, "lora", 0, 73.0, second)
    ungrouped = _log(project_root, "full", 0, 74.0)

    client = _client(project_root)
    runs = {run.info.run_id: run for run in _all_runs(client)}
    active = {run_id for run_id, run in runs.items() if run.info.lifecycle_stage == "active"}
    parents = {run.info.run_name: run for run in runs.values() if run.info.run_name.startswith("pipeline-")}
    assert set(parents) == {"pipeline-aaaa11112222", "pipeline-bbbb33334444"}    # one parent per group
    assert runs[replaced].info.lifecycle_stage == "deleted"
    assert active == {kept_seed1, rerun, other_group, ungrouped, *(p.info.run_id for p in parents.values())}
    assert runs[rerun].data.metrics["sets.test.factual.contextual_em"] == 72.0
    for run_id, group in ((kept_seed1, first), (rerun, first), (other_group, second)):
        tags = runs[run_id].data.tags
        assert tags["pipeline_run"] == group.id
        assert tags["mlflow.parentRunId"] == parents[group.run_name].info.run_id
    parent = parents["pipeline-aaaa11112222"]
    assert parent.data.tags["pipeline_run"] == "aaaa11112222" and parent.info.status == "FINISHED"
    assert parent.data.params == {"train.lr": "0.001", "train.mixture": '["factual"]'}
    assert {"pipeline_run", "mlflow.parentRunId"}.isdisjoint(runs[ungrouped].data.tags)


def test_pipeline_run_hashes_what_every_run_of_a_pipeline_shares():
    raw = config_module.read_params([PROJECT_ROOT / "params.yaml"])
    base = tracking.pipeline_run(config_module.from_dict(raw))

    def changed(**sections) -> str:
        return tracking.pipeline_run(config_module.from_dict(config_module.deep_merge(raw, sections))).id

    assert re.fullmatch(r"[0-9a-f]{12}", base.id)
    assert {"seeds", "methods", "tracking", "report"}.isdisjoint(base.params)
    assert "seed" not in base.params["train"]
    # Per-seed and per-method settings, and where the runs are logged, keep the group ...
    assert changed(seeds=[0, 1, 2, 3]) == base.id
    assert changed(methods={"lora": {"train": {"lr": 0.02}}}) == base.id
    assert changed(tracking={"experiment": "elsewhere"}, report={"notes": []}) == base.id
    # ... what every run shares starts another.
    assert changed(train={"max_steps": 7}) != base.id
    assert changed(counterfactuals={"seed": 1}) != base.id
    assert changed(evaluate={"num_beams": 2}) != base.id


@pytest.mark.slow
def test_log_results_dir_logs_a_stage_results_directory(project_root, stage_results):
    """The evaluate stage's own files, logged again into a fresh store: metrics keep the
    contract's names and units, params come from the params slice, tags from run info."""
    results = stage_results.run_dir("lora", 1)
    train = read_train_record(results / "train.json")
    metrics = read_metrics(results / "metrics.json")
    pipeline = tracking.pipeline_run(config_module.load([stage_results.params]))
    run_id = tracking.log_results_dir(TRACKING, results, method="lora", pipeline=pipeline)
    run = _client(project_root).get_run(run_id)
    assert train.seed == 1 and run.info.run_name == "lora-seed1"
    assert run.data.tags["seed"] == "1" and run.data.tags["pipeline_run"] == pipeline.id
    assert run.data.metrics["train.params.trainable"] == train.params.trainable
    assert run.data.metrics["train.cost.step_memory.sum_bytes"] == train.cost.step_memory.sum_bytes
    assert (run.data.metrics["sets.seen.counterfactual.contextual_em_pct"]
            == metrics.sets["seen"]["counterfactual"].contextual_em_pct)
    ratio = metrics.memorization["seen"].memorization_ratio_pct
    assert run.data.metrics.get("memorization.seen.memorization_ratio_pct") == ratio
    assert not any(key.endswith("memorization_ratio") for key in run.data.metrics)
    assert run.data.params["options.r"] == str(train.run.params["options"]["r"])
    assert run.data.params["train.lr"] == str(train.run.params["train"]["lr"])
    assert run.data.tags["data_hash"] == train.run.data_sha256
    assert run.data.tags["backbone_hash"] == train.run.backbone_sha256
    assert run.data.tags["cpu_model"] == train.run.hardware.cpu_model
    curve = read_curve(results / "train_curve.csv")
    assert ([m.step for m in _client(project_root).get_metric_history(run_id, "val_loss")]
            == [row.step for row in curve if row.val_loss is not None])
    assert {a.path for a in _client(project_root).list_artifacts(run_id)} == {"train.json", "metrics.json",
                                                                             "train_curve.csv"}


def test_missing_artifact_fails_before_any_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        tracking.log_method_run(TRACKING, run_name="x", params={}, metrics={}, step_metrics=[],
                                artifacts=[tmp_path / "nothing.json"], tags={})
    with pytest.raises(ValueError, match=r"step_metrics\[0\]: expected a 'step' key"):
        tracking.log_method_run(TRACKING, run_name="x", params={}, metrics={},
                                step_metrics=[{"train_loss": 1.0}], artifacts=[], tags={})
    assert not (tmp_path / "mlflow.db").exists()


def test_retry_on_locked_database_only():
    calls = []

    def locked_twice():
        calls.append(1)
        if len(calls) < 3:
            try:
                raise sqlite3.OperationalError("database is locked")
            except sqlite3.OperationalError as cause:
                raise RuntimeError("commit failed") from cause   # wrapped, as MLflow does
        return "done"

    assert tracking.with_lock_retry(locked_twice, "test", first_delay_s=0.001) == "done"
    assert len(calls) == 3

    other = []

    def broken():
        other.append(1)
        raise ValueError("no such table")

    with pytest.raises(ValueError):
        tracking.with_lock_retry(broken, "test", first_delay_s=0.001)
    assert len(other) == 1
    with pytest.raises(sqlite3.OperationalError):
        tracking.with_lock_retry(lambda: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked")),
                                 "test", attempts=2, first_delay_s=0.001)


def test_store_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.sqlite_database_path("sqlite:///mlflow.db") == tmp_path.resolve() / "mlflow.db"
    assert tracking.sqlite_database_path("sqlite:////srv/db/m.db") == Path("/srv/db/m.db")
    assert tracking.artifact_location("sqlite:////srv/db/m.db") == "file:///srv/db/mlartifacts"
    assert tracking.artifact_location("http://mlflow.example:5000") is None
    assert tracking.resolved_uri("sqlite:///sub/m.db") == f"sqlite:///{tmp_path.resolve()}/sub/m.db"
    assert tracking.resolved_uri("http://mlflow.example:5000") == "http://mlflow.example:5000"


def test_git_commit_and_dirty_flag_inside_and_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) == "unknown" and git_dirty(tmp_path) is None
    git = ["git", "-c", "user.email=t@cfqa", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run(git + ["add", "f.txt"], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "a"], cwd=tmp_path, check=True)
    assert re.fullmatch(r"[0-9a-f]{40}", git_commit(tmp_path)) and git_dirty(tmp_path) is False
    (tmp_path / "f.txt").write_text("b")
    assert git_dirty(tmp_path) is True


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cfqa import tracking
    from cfqa.config import TrackingConfig
    name, everyone = sys.argv[1], sys.argv[2].split(",")
    config = TrackingConfig(uri="sqlite:///mlflow.db", experiment="cfqa-test")
    tracking.open_experiment(config)            # all children race to create the store
    Path(f"ready-{name}").touch()               # then wait for each other, so the runs are
    deadline = time.time() + 120                # written at the same moment
    while not all(Path(f"ready-{n}").exists() for n in everyone) and time.time() < deadline:
        time.sleep(0.05)
    tracking.log_method_run(
        config, run_name=name, params={"method": name}, metrics={"em": float(len(name))},
        step_metrics=[{"step": s, "train_loss": 1.0 / s} for s in range(1, 51)],
        artifacts=[], tags={"method": name, "seed": 0, "data_hash": "x"},
        pipeline=tracking.PipelineRun(id="cafe00000000", params={"train": {"lr": 0.001}}))
""")


@pytest.mark.slow
def test_parallel_processes_share_one_store(tmp_path):
    """Three processes create one fresh SQLite store and log into it at once, under one
    pipeline run whose parent they race to create (about 15-25 s here: a fresh store runs
    MLflow's schema migrations, about 9 s on this machine)."""
    names = ["full", "lora", "ia3"]
    children = [subprocess.Popen([sys.executable, "-c", CHILD, name, ",".join(names)], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name in names]
    outputs = [child.communicate(timeout=300) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err
        assert "🏃" not in out + err and "alembic" not in err and "Creating initial" not in err
    client = _client(tmp_path)
    runs = _runs(client)
    assert set(runs) == {*names, "pipeline-cafe00000000"}          # exactly one parent
    assert all(run.info.status == "FINISHED" for run in runs.values())
    parent_id = runs["pipeline-cafe00000000"].info.run_id
    assert {runs[name].data.tags["mlflow.parentRunId"] for name in names} == {parent_id}
    assert runs["lora"].data.metrics["em"] == 4.0
    assert len(client.get_metric_history(runs["ia3"].info.run_id, "train_loss")) == 50
    assert [e.name for e in client.search_experiments()].count("cfqa-test") == 1
