"""The whole DAG, end to end, on a tiny configuration (two methods, two seeds), run by
Snakemake once for the test run (tests/smoke_run.py: a copy of the project, the local-gpus
profile): Snakemake runs every stage, each (method, seed) run has its own files and MLflow run
under one pipeline run, each GPU job held its own device, a second run has nothing to do, and
after `dvc commit` a LoRA hyper-parameter change reruns LoRA's stages for every seed, and the
report, and nothing else.

Every registered method goes through the same stage commands in one process (the last test)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cfqa.contract import read_metrics, read_train_record
from cfqa.methods.registry import METHOD_NAMES
from pipeline_support import PROJECT, run_tool
from stage_results import run_stage, run_stages, tiny_params, working_directory

pytestmark = pytest.mark.slow
RUN_FILES = ("train.json", "train_curve.csv", "predictions.jsonl", "per_question.jsonl", "metrics.json")


@pytest.fixture(scope="module")
def pipeline(smoke_run) -> tuple[Path, subprocess.CompletedProcess]:
    """The project run by Snakemake, and that run's result."""
    return smoke_run.root, smoke_run.result


def assert_completed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def runs_of(root: Path) -> list[tuple[str, int]]:
    params = yaml.safe_load((root / "params.yaml").read_text())
    return [(method, seed) for method in params["methods"] for seed in params["seeds"]]


def test_tiny_configuration_has_several_seeds(pipeline):
    root, _ = pipeline
    assert yaml.safe_load((root / "params.yaml").read_text())["seeds"] == [0, 1]


def test_every_method_and_seed_has_its_own_run(pipeline):
    root, _ = pipeline
    weights = {}
    for method, seed in runs_of(root):
        run = root / "results" / method / f"seed{seed}"
        missing = [name for name in RUN_FILES if not (run / name).is_file()]
        assert not missing, f"{run}: missing {missing}"
        assert read_train_record(run / "train.json", method).seed == seed
        metrics = read_metrics(run / "metrics.json", method)
        assert (metrics.method, metrics.seed) == (method, seed)
        assert set(metrics.sets) == {"test", "seen"}
        assert set(metrics.sets["test"]) == {"factual", "counterfactual", "empty", "random"}
        model = root / "models" / method / f"seed{seed}" / "trainable.safetensors"
        assert model.stat().st_size > 0
        weights[method, seed] = hashlib.sha256(model.read_bytes()).hexdigest()
        for stage in ("train", "evaluate"):
            assert (root / "logs" / stage / method / f"seed{seed}.log").is_file()
        assert not (root / "models" / ".checkpoints" / method / f"seed{seed}").exists()
    # The seed reaches training: the same method trained with another seed has other weights.
    assert weights["full", 0] != weights["full", 1] and weights["lora", 0] != weights["lora", 1]


def test_mlflow_has_one_run_per_method_and_seed_under_one_pipeline_run(pipeline):
    from mlflow import MlflowClient

    root, _ = pipeline
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cfqa-smoke")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    parents = [name for name in runs if name.startswith("pipeline-")]
    assert len(parents) == 1 and len(runs) == len(runs_of(root)) + 1
    parent = runs[parents[0]]
    group = parent.data.tags["pipeline_run"]
    assert parents[0] == f"pipeline-{group}" and re.fullmatch(r"[0-9a-f]{12}", group)
    assert parent.data.params["train.max_steps"] == str(yaml.safe_load((root / "params.yaml").read_text())
                                                        ["train"]["max_steps"])
    for method, seed in runs_of(root):
        run = runs[f"{method}-seed{seed}"]
        assert (run.data.tags["method"], run.data.tags["seed"]) == (method, str(seed))
        assert run.data.tags["pipeline_run"] == group
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "sets.test.factual.contextual_em_pct" in run.data.metrics
        assert run.data.tags["git_commit"] != "unknown"


def test_lora_change_reruns_lora_for_every_seed_and_nothing_else(pipeline):
    """Tune, train and evaluate jobs only; the report's part is the next test."""
    root, _ = pipeline
    stages = ["tune", "train", "evaluate"]
    run_tool(["dvc", "commit", "--force", "--quiet", *stages], root, timeout=300)
    assert json.loads(run_tool(["dvc", "status", "--json", *stages], root).stdout or "{}") == {}
    seeds = yaml.safe_load((root / "params.yaml").read_text())["seeds"]
    lora_runs = {f"{stage}@lora-{seed}" for stage in ("train", "evaluate") for seed in seeds} | {"tune@lora"}
    with changed_lora_rank(root):
        changed = json.loads(run_tool(["dvc", "status", "--json", *stages], root).stdout)
        assert set(changed) == lora_runs
        dry = run_tool(["snakemake", "--cores", "2", "--dry-run"], root).stdout
        stats = job_stats(dry)
        # Snakemake validates the params when it parses them; its validate job runs only when
        # the stamp is missing (DVC's reruns on every params.yaml edit).
        assert set(stats) == {"tune", "train", "evaluate", "report", "all"}
        assert stats["train"] == stats["evaluate"] == len(seeds) and stats["tune"] == 1
        wildcards = set(re.findall(r"wildcards: (.*)", dry))
        assert wildcards == {f"method=lora, seed={seed}" for seed in seeds} | {"method=lora"}


def test_report_and_summary_cover_every_method(pipeline):
    root, result = pipeline
    assert_completed(result)
    methods = list(yaml.safe_load((root / "params.yaml").read_text())["methods"])
    summary = json.loads((root / "results/summary.json").read_text())
    assert set(summary["methods"]) == set(methods)
    # The DVC metric: every method, in params.yaml's order, its three numbers.
    headline = json.loads((root / "results/headline.json").read_text())
    assert list(headline) == methods and all(set(v) == {"cf_em%", "cf_em%±", "f_em%"} for v in headline.values())
    report = (root / "reports/report.md").read_text()
    html = (root / "reports/index.html").read_text()
    for method in methods:
        assert f"| {method} " in report
        assert method in html
    assert "<script src=" not in html


def test_each_gpu_job_held_its_own_device(pipeline):
    """The local-gpus profile: tune, train and evaluate start through cfqa.launch, which pins each
    to one device of the list Snakemake was given; the CPU stages see none."""
    root, result = pipeline
    assert_completed(result)
    logs = [root / "logs" / "tune" / f"{method}.stderr.log" for method, _ in runs_of(root)[::2]]
    logs += [root / "logs" / stage / method / f"seed{seed}.stderr.log"
             for stage in ("train", "evaluate") for method, seed in runs_of(root)]
    for log in logs:
        assert re.search(r"pinned to CUDA device\(s\) [57] \(CUDA_VISIBLE_DEVICES", log.read_text()), log
    assert "pinned" not in (root / "logs" / "prepare.stderr.log").read_text()


def test_job_logs_hold_no_progress_bars(pipeline):
    """A job's stderr goes to its log file: no bar of ours, the hub's or transformers'
    ("Loading weights") is drawn into it, every stage's log is lines of text."""
    root, result = pipeline
    assert_completed(result)
    logs = sorted((root / "logs").rglob("*.stderr.log"))
    assert len(logs) >= 10
    drawn = [log for log in logs if "\r" in log.read_text() or "it/s]" in log.read_text()]
    assert not drawn, drawn


def test_second_run_has_nothing_to_do(pipeline):
    root, result = pipeline
    assert_completed(result)
    dry = run_tool(["snakemake", "--cores", "2", "--dry-run"], root)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_lora_change_reruns_the_report_too(pipeline):
    root, result = pipeline
    assert_completed(result)
    run_tool(["dvc", "commit", "--force", "--quiet"], root, timeout=300)
    assert json.loads(run_tool(["dvc", "status", "--json"], root).stdout or "{}") == {}
    seeds = yaml.safe_load((root / "params.yaml").read_text())["seeds"]
    with changed_lora_rank(root):
        changed = json.loads(run_tool(["dvc", "status", "--json"], root).stdout)
        assert set(changed) == ({f"{stage}@lora-{seed}" for stage in ("train", "evaluate") for seed in seeds}
                                | {"tune@lora", "report", "validate"})


@contextlib.contextmanager
def changed_lora_rank(root: Path):
    """params.yaml with LoRA's rank doubled, restored on exit."""
    path = root / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    params["methods"]["lora"]["options"]["r"] *= 2
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(original)


def job_stats(dry_run: str) -> dict[str, int]:
    """Snakemake's "Job stats" table: rule -> number of jobs."""
    table = dry_run.split("Job stats:")[1].split("total")[0]
    return {parts[0]: int(parts[1]) for line in table.splitlines()
            if len(parts := line.split()) == 2 and parts[1].isdigit()}


def test_every_registered_method_runs_through_the_stage_commands(tmp_path):
    """Every method of the registry, one seed, a few steps: tune, train, evaluate and the report
    through the stage table's command lines (tests/stage_results.py), in one process."""
    methods = tuple(yaml.safe_load((PROJECT / "params.yaml").read_text())["methods"])
    assert set(methods) == set(METHOD_NAMES)
    values = tiny_params(methods)
    values["seeds"] = [0]
    values["train"].update(max_steps=6, eval_every=3)
    values["tune"].update(lr_factors=[1.0], trials=1, rungs=[0.5])
    run = run_stages(tmp_path, values=values)
    with working_directory(tmp_path):
        run_stage("report", run.params)
    for method in methods:
        train = read_train_record(run.run_dir(method, 0) / "train.json", method)
        assert (train.seed, train.steps) == (0, 6) and train.lr_selected, method
        metrics = read_metrics(run.run_dir(method, 0) / "metrics.json", method)
        assert set(metrics.sets["test"]) == {"factual", "counterfactual", "empty", "random"}, method
        assert (run.model_dir(method, 0) / "trainable.safetensors").stat().st_size > 0, method
    summary = json.loads((run.results / "summary.json").read_text())
    assert set(summary["methods"]) == set(methods)
    headline = json.loads((run.results / "headline.json").read_text())
    assert list(headline) == list(methods)
    report = (tmp_path / "reports/report.md").read_text()
    assert all(f"| {method} " in report for method in methods)
