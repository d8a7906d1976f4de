"""MLflow tracking into a SQLite store in a temporary project root: what one run holds when
read back, artifacts beside the database, and several processes logging at once."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cfqa import config as config_module
from cfqa.config import PROJECT_ROOT, TrackingConfig
from cfqa.contract import read_curve, read_metrics, read_train_record
from cfqa.contract.run_info import git_commit, git_dirty
from cfqa.tracking.datasets import log_datasets
from cfqa.tracking.experiment import open_experiment
from cfqa.tracking.failures import failures_as_warnings
from cfqa.tracking.identity import RunIdentity, run_identity
from cfqa.tracking.locking import with_lock_retry
from cfqa.tracking.method_run import log_method_run
from cfqa.tracking.pipeline import PipelineRun, pipeline_run
from cfqa.tracking.results_dir import log_results_dir
from cfqa.tracking.store import artifact_location, artifacts_root, local_artifact_dir, resolved_uri, sqlite_database_path
from cfqa.tracking.training_run import TrainingRun, find_training_run, start_training_run
from pipeline_support import commit_all

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


def _log(tmp_path: Path, method: str, seed: int, em: float, pipeline: PipelineRun | None = None) -> str:
    metrics_file = tmp_path / f"{method}-metrics.json"
    metrics_file.write_text(json.dumps({"contextual_em": em}))
    return log_method_run(
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
    # Location-free: `mlflow server` serves it from ./mlartifacts; the store holds no path.
    assert experiments[0].artifact_location == "mlflow-artifacts:/cfqa-test"
    assert experiments[0].tags["mlflow.experimentKind"] == "custom_model_development"
    runs = _runs(client)
    assert set(runs) == {"full-seed0", "lora-seed1"}

    lora = runs["lora-seed1"]
    assert lora.info.status == "FINISHED"
    assert lora.data.params["options.r"] == "8"
    assert lora.data.params["options.target_modules"] == '["q", "v"]'
    assert lora.data.params["train.lr"] == "0.005"
    assert lora.data.metrics["sets.test.factual.contextual_em"] == 77.25
    assert runs["full-seed0"].data.metrics["sets.test.factual.contextual_em"] == 81.5
    # A yes/no value is a 0/1 metric named as a flag, not a number like a learning rate.
    assert lora.data.metrics["stopped_early_flag"] == 1.0 and "stopped_early" not in lora.data.metrics
    assert "cost.memory_measure" not in lora.data.metrics
    history = client.get_metric_history(lora_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(10, 2.0), (20, 1.5), (30, 1.2)]
    assert [(m.step, m.value) for m in client.get_metric_history(lora_id, "val_loss")] == [(20, 1.7)]

    assert lora.data.tags["data_hash"] == "abc123"
    assert lora.data.tags["method"] == "lora" and lora.data.tags["seed"] == "1"
    assert lora.data.tags["git_commit"] == "unknown"            # tmp_path is not a git checkout
    assert "git_dirty" not in lora.data.tags
    assert lora.data.tags["mlflow.source.name"] == "cfqa evaluate"
    assert lora.data.tags["mlflow.source.type"] == "LOCAL"

    assert lora.info.artifact_uri == f"mlflow-artifacts:/cfqa-test/{lora_id}/artifacts"
    stored = tmp_path / "mlartifacts" / "cfqa-test" / lora_id / "artifacts"
    assert local_artifact_dir(TRACKING.uri, lora.info.artifact_uri) == stored.resolve()
    assert [p.name for p in stored.iterdir()] == ["lora-metrics.json"]
    assert json.loads((stored / "lora-metrics.json").read_text()) == {"contextual_em": 77.25}
    assert not (tmp_path / "mlruns").exists()


def _all_runs(client: MlflowClient) -> list:
    from mlflow.entities import ViewType

    experiment = client.get_experiment_by_name(TRACKING.experiment)
    return client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)


def test_runs_are_grouped_under_one_parent_per_pipeline_run_and_a_rerun_replaces(project_root):
    first = PipelineRun(id="aaaa11112222", params={"train": {"lr": 0.001, "mixture": ["factual"]}})
    second = PipelineRun(id="bbbb33334444", params={"train": {"lr": 0.003, "mixture": ["factual"]}})
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
    base = pipeline_run(config_module.from_dict(raw))

    def changed(**sections) -> str:
        return pipeline_run(config_module.from_dict(config_module.deep_merge(raw, sections))).id

    assert re.fullmatch(r"[0-9a-f]{12}", base.id)
    assert {"seeds", "methods", "tracking", "report"}.isdisjoint(base.params)
    assert "seed" not in base.params["train"]
    # Per-seed and per-method settings, and where the runs are logged, keep the group ...
    assert changed(seeds=[0, 1, 2, 3]) == base.id
    assert changed(methods={"lora": {"train": {"lr": 0.02}}}) == base.id
    assert changed(tracking={"experiment": "elsewhere"}, report={"notes": []}) == base.id
    assert changed(run_root="runs/elsewhere") == base.id
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
    pipeline = pipeline_run(config_module.load([stage_results.params]))
    run_id = log_results_dir(TRACKING, results, method="lora", pipeline=pipeline)
    run = _client(project_root).get_run(run_id)
    assert train.seed == 1 and run.info.run_name == "lora-seed1"
    assert run.data.tags["seed"] == "1" and run.data.tags["pipeline_run"] == pipeline.id
    assert run.data.metrics["train.params.trainable"] == train.params.trainable
    assert run.data.metrics["train.cost.step_memory.sum_bytes"] == train.cost.step_memory.sum_bytes
    assert (run.data.metrics["sets.seen.counterfactual.contextual_em_pct"]
            == metrics.sets["seen"]["counterfactual"]["contextual_em_pct"])
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
    stored = local_artifact_dir(TRACKING.uri, run.info.artifact_uri)
    logged = {p.name for p in stored.iterdir()}
    assert {"train.json", "train_curve.csv", "metrics.json", "headline.json"} <= logged
    assert "predictions.jsonl" not in logged and logged <= {p.name for p in results.iterdir()}


def test_missing_artifact_fails_before_any_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        log_method_run(TRACKING, run_name="x", params={}, metrics={}, step_metrics=[],
                       artifacts=[tmp_path / "nothing.json"], tags={})
    with pytest.raises(ValueError, match=r"step_metrics\[0\]: expected a 'step' key"):
        log_method_run(TRACKING, run_name="x", params={}, metrics={},
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

    assert with_lock_retry(locked_twice, "test", first_delay_s=0.001) == "done"
    assert len(calls) == 3

    other = []

    def broken():
        other.append(1)
        raise ValueError("no such table")

    with pytest.raises(ValueError):
        with_lock_retry(broken, "test", first_delay_s=0.001)
    assert len(other) == 1
    with pytest.raises(sqlite3.OperationalError):
        with_lock_retry(lambda: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked")),
                        "test", attempts=2, first_delay_s=0.001)


def test_store_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_database_path("sqlite:///mlflow.db") == tmp_path.resolve() / "mlflow.db"
    assert sqlite_database_path("sqlite:////srv/db/m.db") == Path("/srv/db/m.db")
    assert artifacts_root("sqlite:////srv/db/m.db") == Path("/srv/db/mlartifacts")
    assert artifact_location("sqlite:////srv/db/m.db", "cfqa embedded/v2") == "mlflow-artifacts:/cfqa_embedded_v2"
    assert artifact_location("http://mlflow.example:5000", "cfqa") is None
    assert (local_artifact_dir("sqlite:////srv/db/m.db", "mlflow-artifacts:/cfqa/0a1b/artifacts")
            == Path("/srv/db/mlartifacts/cfqa/0a1b/artifacts"))
    assert local_artifact_dir("sqlite:////srv/db/m.db", "file:///elsewhere/0a1b/artifacts") is None
    assert local_artifact_dir("http://mlflow.example:5000", "mlflow-artifacts:/cfqa/0a1b") is None
    with pytest.raises(ValueError, match="leaves"):
        local_artifact_dir("sqlite:////srv/db/m.db", "mlflow-artifacts:/../../etc")
    assert resolved_uri("sqlite:///sub/m.db") == f"sqlite:///{tmp_path.resolve()}/sub/m.db"
    assert resolved_uri("http://mlflow.example:5000") == "http://mlflow.example:5000"


def test_git_commit_and_dirty_flag_inside_and_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) == "unknown" and git_dirty(tmp_path) is None
    (tmp_path / "f.txt").write_text("a")
    commit_all(tmp_path, "a")
    assert re.fullmatch(r"[0-9a-f]{40}", git_commit(tmp_path)) and git_dirty(tmp_path) is False
    (tmp_path / "f.txt").write_text("b")
    assert git_dirty(tmp_path) is True


def test_the_dirty_flag_never_writes_the_repository_s_index(tmp_path):
    """Jobs running together all ask; a `git status` that refreshed the index would race for
    .git/index.lock and rewrite the user's index."""
    (tmp_path / "f.txt").write_text("a")
    commit_all(tmp_path, "a")
    os.utime(tmp_path / "f.txt", ns=(1, 1))          # same content, stale stat data: a refresh would write
    index = tmp_path / ".git" / "index"
    before = (index.stat().st_mtime_ns, index.read_bytes())
    assert git_dirty(tmp_path) is False
    assert (index.stat().st_mtime_ns, index.read_bytes()) == before


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cfqa.tracking.experiment import open_experiment
    from cfqa.tracking.method_run import log_method_run
    from cfqa.tracking.pipeline import PipelineRun
    from cfqa.config import TrackingConfig
    name, everyone = sys.argv[1], sys.argv[2].split(",")
    config = TrackingConfig(uri="sqlite:///mlflow.db", experiment="cfqa-test")
    open_experiment(config)                     # all children race to create the store
    Path(f"ready-{name}").touch()               # then wait for each other, so the runs are
    deadline = time.time() + 120                # written at the same moment
    while not all(Path(f"ready-{n}").exists() for n in everyone) and time.time() < deadline:
        time.sleep(0.05)
    log_method_run(
        config, run_name=name, params={"method": name}, metrics={"em": float(len(name))},
        step_metrics=[{"step": s, "train_loss": 1.0 / s} for s in range(1, 51)],
        artifacts=[], tags={"method": name, "seed": 0, "data_hash": "x"},
        pipeline=PipelineRun(id="cafe00000000", params={"train": {"lr": 0.001}}))
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


JOB = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cfqa.tracking.experiment import open_experiment
    from cfqa.tracking.identity import run_identity
    from cfqa.tracking.method_run import log_method_run
    from cfqa.tracking.pipeline import PipelineRun
    from cfqa.tracking.training_run import find_training_run, start_training_run
    from cfqa.tracking import method_run, training_run
    from cfqa.config import TrackingConfig
    seed, jobs = int(sys.argv[1]), int(sys.argv[2])
    config = TrackingConfig(uri="sqlite:///mlflow.db", experiment="cfqa-race")
    group = PipelineRun(id="race00000000", params={"train": {"lr": 0.001}})
    variant = lambda split: [Path("data") / split / f"{v}.jsonl" for v in ("factual", "counterfactual")]

    BARRIERS = ("train", "train-datasets", "evaluate", "evaluate-datasets")

    def barrier(name):
        Path(f"{name}-{seed}").touch()
        deadline = time.time() + 300
        while not all(Path(f"{name}-{s}").exists() for s in range(jobs)):
            if time.time() > deadline:
                sys.exit(f"barrier {name}: timed out")
            time.sleep(0.005)

    def release_on_failure(kind, error, trace):    # a failed job must not hold the others up
        for name in BARRIERS:
            Path(f"{name}-{seed}").touch()
        sys.__excepthook__(kind, error, trace)

    sys.excepthook = release_on_failure

    # Every job reaches each dataset logging (train's, then evaluate's) at the same moment: the
    # moment two jobs insert the same new dataset, which the file locks around the store's creation
    # and the parent run would otherwise spread out.
    prepared, arrivals = training_run.dataset_inputs, iter(("train-datasets", "evaluate-datasets"))

    def dataset_inputs_together(*args, **kwargs):
        inputs = prepared(*args, **kwargs)
        barrier(next(arrivals))
        return inputs

    # Train's and evaluate's logging each call it by the name they imported.
    training_run.dataset_inputs = method_run.dataset_inputs = dataset_inputs_together
    # A train job: every job starts on the brand-new store at once and logs the same data files.
    identity = run_identity(group, "lora", seed, {"train": {"lr": 0.01}})
    barrier("train")
    run = start_training_run(config, identity, params={"train": {"lr": 0.01}},
                             datasets={"training": variant("train"), "validation": variant("validation")})
    run.log_point({"step": 10, "train_loss": 1.0 + seed})
    run.training_done([{"step": 10, "train_loss": 1.0 + seed}])
    # Its evaluate job: every job logs the same test files into its own run at once.
    barrier("evaluate")
    client, experiment_id = open_experiment(config)
    log_method_run(
        config, run_name=identity.run_name, params={"train": {"lr": 0.01}}, metrics={"em": float(seed)},
        step_metrics=[{"step": 10, "train_loss": 1.0 + seed}], artifacts=[],
        tags={"method": "lora", "seed": seed, "config_hash": identity.config_hash}, pipeline=group,
        run_id=find_training_run(client, experiment_id, identity), datasets={"evaluation": variant("test")})
""")


@pytest.mark.slow
def test_jobs_starting_together_on_a_new_store_lose_no_run_and_no_dataset(tmp_path):
    """Eight train-then-evaluate jobs, real processes, start at the same moment on a store that
    does not exist yet and log the same data files: MLflow's dataset table has a unique key, and
    jobs that insert the same new dataset at once race for it (one lost its run before). Every
    job must finish with exactly one FINISHED run holding all its datasets, no duplicate, no
    warning, no run marked with a tracking error (about 2 minutes on 2 shared cores). Before
    log_datasets, 7 of 8 jobs failed here with "UNIQUE constraint failed: datasets..."."""
    jobs = 8
    for split in ("train", "validation", "test"):
        for variant in ("factual", "counterfactual"):
            path = tmp_path / "data" / split / f"{variant}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"question": f"{split} {variant}?", "answer": "Paris"}) + "\n")
    env = {**os.environ, "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}
    children = [subprocess.Popen([sys.executable, "-c", JOB, str(seed), str(jobs)], cwd=tmp_path, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in range(jobs)]
    outputs = [child.communicate(timeout=600) for child in children]
    failed = [(seed, err[-2000:]) for seed, (child, (_, err)) in enumerate(zip(children, outputs))
              if child.returncode != 0 or " WARNING " in err or "Traceback" in err]

    from mlflow.entities import ViewType

    client = _client(tmp_path)
    experiment = client.get_experiment_by_name("cfqa-race")
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000)
    names = [run.info.run_name for run in runs]
    expected = {f"lora-seed{seed}" for seed in range(jobs)}
    lost = expected - set(names)
    duplicated = {name for name in names if names.count(name) > 1}
    marked = [run.info.run_name for run in runs if "cfqa.tracking_error" in run.data.tags]
    unfinished = [run.info.run_name for run in runs if run.info.status != "FINISHED"]
    print(f"{jobs} jobs on a new store: {len(failed)} failed, {len(lost)} runs lost, "
          f"{len(duplicated)} duplicated, {len(marked)} marked, {len(unfinished)} unfinished")
    assert failed == [] and lost == set() and duplicated == set() and marked == [] and unfinished == []
    assert set(names) == expected | {"pipeline-race00000000"}
    for run in runs:
        if run.info.run_name in expected:
            logged = {(d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
                      for d in run.inputs.dataset_inputs}
            assert logged == {(f"{split}/{variant}", context) for split, context in
                              (("train", "training"), ("validation", "validation"), ("test", "evaluation"))
                              for variant in ("factual", "counterfactual")}, run.info.run_name
    # One row per (name, digest) in the dataset table: the runs share the stored datasets.
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("select count(*), count(distinct name || digest) from datasets").fetchone() == (6, 6)


def test_a_dataset_insert_that_loses_the_race_is_retried_and_other_errors_are_not(monkeypatch):
    """What log_datasets does with MLflow's answers: a unique-constraint error means another job
    stored the dataset first, and the call is made again; any other error is raised."""
    class Store:
        def __init__(self, errors):
            self.errors, self.calls = list(errors), 0

        def log_inputs(self, run_id, datasets):
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)

    race = Exception("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                     "datasets.name, datasets.digest")
    store = Store([race, race])
    log_datasets(store, "run", [])
    assert store.calls == 3
    store = Store([ValueError("bad dataset")])
    with pytest.raises(ValueError, match="bad dataset"):
        log_datasets(store, "run", [])
    assert store.calls == 1
    store = Store([race] * 5)
    with pytest.raises(Exception, match="UNIQUE constraint"):
        log_datasets(store, "run", [], attempts=5)
    assert store.calls == 5


def test_a_tracking_failure_is_a_warning_and_marks_the_run(project_root, monkeypatch, caplog):
    """Tracking never fails a stage: a store that refuses the evaluation's record leaves one
    warning, the run tagged with the error and ended FAILED; training's own logging failures
    leave its run open and tagged, and training goes on."""
    from mlflow.entities import ViewType

    def refuse(self, run_id, datasets=None, models=None):
        raise RuntimeError("disk I/O error while writing http://alice:s3cret@tracking.example/api")

    monkeypatch.setattr(MlflowClient, "log_inputs", refuse)
    identity, training = _train_run(project_root, {"train": {"lr": 0.01}})
    assert training.run_id is not None                  # the run exists and stays open for evaluate
    with caplog.at_level("WARNING", logger="cfqa.tracking"):
        with failures_as_warnings("logging lora-seed0"):
            client, experiment_id = open_experiment(TRACKING)
            log_method_run(
                TRACKING, run_name=identity.run_name, params={}, metrics={"contextual_em": 70.0}, step_metrics=[],
                artifacts=[], tags={"method": "lora", "seed": 0}, pipeline=GROUP, datasets=_data_files(project_root),
                run_id=find_training_run(client, experiment_id, identity))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "training goes on" in warnings[0] and "goes on without" in warnings[1]
    client = _client(project_root)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name(TRACKING.experiment).experiment_id],
                                            run_view_type=ViewType.ALL) if r.info.run_name == "lora-seed0"]
    assert run.info.status == "FAILED"
    tag = run.data.tags["cfqa.tracking_error"]
    assert tag.startswith("logging lora-seed0: RuntimeError: disk I/O error")
    assert "s3cret" not in tag and "alice:***@" in tag
    with pytest.raises(KeyboardInterrupt):              # an interrupt still stops the stage
        with failures_as_warnings("logging"):
            raise KeyboardInterrupt


# ---- the run opened by the train stage, ended by evaluate ---------------------------------

GROUP = PipelineRun(id="feed00000000", params={"train": {"lr": 0.001}})
CURVE = [{"step": 10, "train_loss": 2.0, "val_loss": None}, {"step": 20, "train_loss": 1.5, "val_loss": 1.7},
         {"step": 30, "train_loss": 1.2, "val_loss": None}]


def _data_files(root: Path) -> dict[str, list[Path]]:
    variants = root / "data" / "variants"
    files = {"training": [variants / "train" / "factual.jsonl"], "validation": [variants / "validation" / "factual.jsonl"]}
    for context, (path,) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"question": f"a {context} question", "answer": "Paris"}) + "\n")
    return files


def _train_run(root: Path, config: dict, **kwargs) -> tuple[RunIdentity, TrainingRun]:
    identity = run_identity(GROUP, "lora", 0, config)
    return identity, start_training_run(TRACKING, identity, params={"train": config["train"]},
                                        datasets=_data_files(root), **kwargs)


def _evaluate(identity: RunIdentity, em: float) -> str:
    """What log_results_dir does once it has read a results directory."""
    client, experiment_id = open_experiment(TRACKING)
    return log_method_run(
        TRACKING, run_name=identity.run_name, params={"train": {"lr": 0.01}}, metrics={"contextual_em": em},
        step_metrics=CURVE, artifacts=[], tags={"method": "lora", "seed": 0, "config_hash": identity.config_hash},
        pipeline=GROUP, run_id=find_training_run(client, experiment_id, identity))


def test_config_hash_tells_configurations_apart_not_their_encoding():
    listed = run_identity(GROUP, "lora", 0, {"train": {"lr": 0.01, "mixture": ["factual"]}, "options": {"r": 8}})
    tupled = run_identity(GROUP, "lora", 0, {"options": {"r": 8}, "train": {"mixture": ("factual",), "lr": 0.01}})
    assert listed.config_hash == tupled.config_hash and re.fullmatch(r"[0-9a-f]{12}", listed.config_hash)
    assert run_identity(GROUP, "lora", 0, {"train": {"lr": 0.02}}).config_hash != listed.config_hash
    other_group = PipelineRun(id="beef00000000", params={})
    assert run_identity(other_group, "lora", 0, {"train": {"lr": 0.01}}).config_hash != \
        run_identity(GROUP, "lora", 0, {"train": {"lr": 0.01}}).config_hash
    assert listed.tags == {"method": "lora", "seed": "0", "pipeline_run": GROUP.id, "config_hash": listed.config_hash}


def test_train_opens_the_run_and_evaluate_finds_and_ends_it(project_root, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-lora-lr")
    identity, training = _train_run(project_root, {"train": {"lr": 0.01}})
    client = _client(project_root)
    opened = client.get_run(training.run_id)
    assert opened.info.status == "RUNNING" and opened.info.run_name == "lora-seed0"
    assert opened.data.params == {"train.lr": "0.01"}
    assert {k: opened.data.tags[k] for k in identity.tags} == identity.tags
    assert opened.data.tags["mlflow.source.name"] == "cfqa train"
    assert opened.data.tags["dvc_experiment"] == "exp-lora-lr"
    parent = _runs(client)["pipeline-feed00000000"]
    assert opened.data.tags["mlflow.parentRunId"] == parent.info.run_id

    inputs = {d.dataset.name: d for d in opened.inputs.dataset_inputs}
    assert set(inputs) == {"train/factual", "validation/factual"}
    train_file = project_root / "data/variants/train/factual.jsonl"
    sha = hashlib.sha256(train_file.read_bytes()).hexdigest()
    assert inputs["train/factual"].dataset.digest == sha[:32]
    assert {t.key: t.value for t in inputs["train/factual"].tags} == {"mlflow.data.context": "training", "sha256": sha}
    assert json.loads(inputs["train/factual"].dataset.source) == {"uri": "data/variants/train/factual.jsonl"}

    training.log_point(CURVE[0])                   # as training goes
    training.log_point(CURVE[1])
    assert [m.step for m in client.get_metric_history(training.run_id, "train_loss")] == [10, 20]
    training.training_done(CURVE)                  # the rest (points before a resumed checkpoint)
    assert client.get_run(training.run_id).info.status == "RUNNING"

    client_, experiment_id = open_experiment(TRACKING)
    other = run_identity(GROUP, "lora", 0, {"train": {"lr": 0.02}})
    assert find_training_run(client_, experiment_id, other) is None
    assert _evaluate(identity, 75.0) == training.run_id
    ended = client.get_run(training.run_id)
    assert ended.info.status == "FINISHED" and ended.info.end_time >= ended.info.start_time
    assert ended.data.metrics["contextual_em"] == 75.0
    assert [(m.step, m.value) for m in client.get_metric_history(training.run_id, "train_loss")] == \
        [(10, 2.0), (20, 1.5), (30, 1.2)]                      # no point twice
    assert [m.step for m in client.get_metric_history(training.run_id, "val_loss")] == [20]
    # Ended, it is no longer found: evaluating again logs a new run, which replaces it.
    assert find_training_run(client_, experiment_id, identity) is None


def test_a_rerun_ends_its_killed_attempt_and_replaces_it_once_complete(project_root, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    identity, killed = _train_run(project_root, {"train": {"lr": 0.01}})        # never reached evaluate
    _, failed = _train_run(project_root, {"train": {"lr": 0.01}})
    failed.fail()
    _, rerun = _train_run(project_root, {"train": {"lr": 0.01}})
    client = _client(project_root)
    assert client.get_run(killed.run_id).info.status == "KILLED"
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert _evaluate(identity, 70.0) == rerun.run_id
    active = {run.info.run_name: run for run in _all_runs(client) if run.info.lifecycle_stage == "active"}
    assert set(active) == {"lora-seed0", "pipeline-feed00000000"}
    assert active["lora-seed0"].info.run_id == rerun.run_id
    assert {client.get_run(r.run_id).info.lifecycle_stage for r in (killed, failed)} == {"deleted"}


def test_untracked_training_leaves_evaluate_to_create_the_run(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    unreachable = TrackingConfig(uri="sqlite:////proc/cfqa/mlflow.db", experiment="cfqa-test")
    identity = run_identity(GROUP, "lora", 0, {"train": {"lr": 0.01}})
    with caplog.at_level("WARNING", logger="cfqa.tracking"):
        training = start_training_run(unreachable, identity, params={}, datasets={})
    assert training.run_id is None and "training without it" in caplog.text
    training.log_point(CURVE[0])           # no store: nothing happens, nothing fails
    training.training_done(CURVE)
    training.fail()


def test_system_metrics_are_sampled_while_training(project_root, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    _, training = _train_run(project_root, {"train": {"lr": 0.01}})
    deadline = time.time() + 30
    client = _client(project_root)
    while time.time() < deadline and "system/cpu_utilization_percentage" not in client.get_run(training.run_id).data.metrics:
        time.sleep(0.2)
    training.training_done(CURVE)
    metrics = client.get_run(training.run_id).data.metrics
    assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100 * (os.cpu_count() or 1)
    assert metrics["system/system_memory_usage_megabytes"] > 0
    assert training._monitor is None                       # stopped with training


def test_a_copied_project_logs_artifacts_under_the_copy(project_root, tmp_path_factory, monkeypatch):
    """Copy a tracked project and log there: the copy's runs and artifacts stay in the copy,
    and the original's artifacts come along."""
    original = project_root
    first = _log(original, "full", 0, 80.0)
    copy = tmp_path_factory.mktemp("moved") / "checkout"
    shutil.copytree(original, copy)
    shutil.rmtree(original / "mlartifacts")           # nothing may reach back into the original
    monkeypatch.chdir(copy)
    second = _log(copy, "lora", 0, 60.0)
    client = _client(copy)
    for run_id, method in ((first, "full"), (second, "lora")):
        stored = local_artifact_dir(f"sqlite:///{copy / 'mlflow.db'}", client.get_run(run_id).info.artifact_uri)
        assert stored.is_relative_to(copy.resolve())
        assert [p.name for p in stored.iterdir()] == [f"{method}-metrics.json"]
    assert not (original / "mlartifacts").exists()


@pytest.mark.slow
def test_the_stages_log_one_run_from_training_start_to_its_evaluation(stage_results):
    """The real train and evaluate stages: one run per (method, seed), opened before train
    wrote its record and ended after evaluate wrote its scores, holding the whole curve once."""
    from mlflow.entities import ViewType

    client = _client(stage_results.root)
    experiment = client.get_experiment_by_name("cfqa-stage-results")
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    pipeline = pipeline_run(config_module.load([stage_results.params]))
    for method in stage_results.methods:
        for seed in stage_results.seeds:
            (run,) = [r for r in runs if r.info.run_name == f"{method}-seed{seed}"]
            results = stage_results.run_dir(method, seed)
            train = read_train_record(results / "train.json")
            assert run.info.status == "FINISHED"
            assert run.info.start_time < (results / "train.json").stat().st_mtime_ns // 1_000_000
            # Its duration is the work, training plus evaluation; with the wait between them it
            # reaches the moment evaluate ended it, after it wrote its scores.
            work_s = run.data.metrics["time/train_s"] + run.data.metrics["time/evaluate_s"]
            assert run.info.end_time - run.info.start_time == pytest.approx(work_s * 1000, abs=2)
            ended_ms = run.info.start_time + (work_s + run.data.metrics["time/queue_wait_s"]) * 1000
            assert ended_ms >= (results / "metrics.json").stat().st_mtime_ns // 1_000_000 - 2
            identity = run_identity(pipeline, method, seed, train.run.params)
            assert {k: run.data.tags[k] for k in identity.tags} == identity.tags
            assert run.data.tags["mlflow.source.name"] == "cfqa train"
            (parent,) = [r for r in runs if r.info.run_name == pipeline.run_name]
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            contexts = {t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
            assert contexts == {"training", "validation", "evaluation"}
            history = client.get_metric_history(run.info.run_id, "train_loss")
            assert sorted(m.step for m in history) == [row.step for row in read_curve(results / "train_curve.csv")]
            assert run.data.params["train.lr"] == str(train.lr)


def test_a_store_whose_creation_is_cut_short_leaves_no_database(tmp_path, monkeypatch):
    """The schema of a new SQLite store is built aside and renamed in complete: a creation that
    fails half-way (a full disk, a kill) leaves no database that later runs could not open."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    built = mlflow.MlflowClient.search_experiments

    def fail_while_building(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mlflow.MlflowClient, "search_experiments", fail_while_building)
    with pytest.raises(OSError, match=r"mlflow\.db: no space left on device \(ENOSPC\)"):
        open_experiment(TRACKING)
    assert not (tmp_path / "mlflow.db").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".mlflow.db")]
    monkeypatch.setattr(mlflow.MlflowClient, "search_experiments", built)
    client, experiment_id = open_experiment(TRACKING)
    assert (tmp_path / "mlflow.db").exists()
    assert client.get_experiment(experiment_id).name == TRACKING.experiment
