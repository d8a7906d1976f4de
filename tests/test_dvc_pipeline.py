"""DVC as users meet it, on the tiny configuration (LoRA, one seed) in a copy of the project: `dvc repro` runs the DAG; an identical re-evaluation leaves `dvc status` clean; the
results go to the default remote and come back into a fresh clone with nothing to rerun in
either engine; `dvc exp run -S` gives an experiment `dvc exp show` compares with its
baseline, value by value, in a table that fits 120 columns with the changed parameter in view;
a queued experiment (`dvc exp run --queue`, run in a temporary copy) logs into the checkout's
MLflow store, beside the baseline's runs."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from cfqa.dag.dvc_yaml import dvc_document
from pipeline_support import commit_all, run_tool, tool_env
from project_copy import copy_project
from stage_results import tiny_config

pytestmark = pytest.mark.slow
# One method: every DVC behaviour here is per stage. That a LoRA change reruns LoRA's stages and
# no other method's is tests/test_pipeline_smoke.py's (`dvc status` on the shared run).
METHODS = ("lora",)
def dvc_status(root: Path) -> dict:
    return json.loads(run_tool(["dvc", "status", "--json"], root).stdout or "{}")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """tmp/work: the project on the tiny configuration, reproduced by DVC and committed. Its
    default remote (../cfqa-dvc-remote, from .dvc/config) is tmp/cfqa-dvc-remote."""
    root = copy_project(tmp_path_factory.mktemp("dvc") / "work")
    params = tiny_config(METHODS)
    params["seeds"] = [0]
    params["tracking"]["experiment"] = "cfqa-dvc"
    params["tune"].update(lr_factors=[1.0], trials=1)     # one grid point: the test is about DVC, not the grid
    # As tests/stage_results.py: enough training for answers, so LoRA's ranks differ in EM.
    params["train"].update(max_steps=300, eval_every=100, mixture=["factual", "counterfactual"])
    for block in params["methods"].values():
        block.setdefault("train", {})["lr"] = 0.01
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_tool([sys.executable, "-m", "cfqa.dag", "--write", "dvc.yaml"], root)
    commit_all(root, "tiny configuration")
    run_tool(["dvc", "repro"], root, timeout=1500)
    commit_all(root, "results")
    return root


def test_identical_reevaluation_leaves_dvc_status_clean(project):
    """evaluate@lora-0 run again by hand, at a later commit: its scores are the same bytes;
    only evaluation_run.json (commit, machine, speed), which DVC does not track, changed."""
    before = (project / "results/lora/seed0/evaluation_run.json").read_bytes()
    body = dvc_document(yaml.safe_load((project / "params.yaml").read_text()))["stages"]["evaluate"]
    cmd = body["cmd"].replace("${item.method}", "lora").replace("${item.seed}", "0")
    subprocess.run(shlex.split(cmd), cwd=project, env=tool_env(), check=True, capture_output=True, timeout=600)
    assert (project / "results/lora/seed0/evaluation_run.json").read_bytes() != before
    assert dvc_status(project) == {}
    run_tool(["git", "checkout", "--", "results"], project)


def test_push_then_pull_into_a_fresh_clone_has_nothing_to_rerun(project):
    run_tool(["dvc", "push"], project, timeout=600)
    assert (project.parent / "cfqa-dvc-remote" / "files" / "md5").is_dir()
    clone = project.parent / "clone"
    run_tool(["git", "clone", "-q", str(project), str(clone)], project.parent)
    run_tool(["dvc", "pull"], clone, timeout=600)
    assert (clone / "results/lora/seed0/predictions.jsonl").read_bytes() == \
        (project / "results/lora/seed0/predictions.jsonl").read_bytes()
    assert dvc_status(clone) == {}
    # A clone's files have checkout times, not the order they were made in: once DVC has
    # checked them against dvc.lock, --touch gives Snakemake that order.
    run_tool(["snakemake", "--touch", "--cores", "1"], clone)
    dry = run_tool(["snakemake", "--dry-run", "--cores", "1"], clone)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_bad_params_stop_repro_before_any_output_is_removed(project):
    """`dvc repro` removes a stage's outputs before running it: the validate stage runs
    first, so a params.yaml the CLI refuses stops the run with every result in place."""
    path = project / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    del params["methods"]["lora"]["options"]["r"]
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = subprocess.run(["dvc", "repro"], cwd=project, env=tool_env(), capture_output=True, text=True,
                                timeout=600)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    assert "methods.lora.options.r" in result.stdout + result.stderr
    assert "Running stage 'validate'" in result.stdout and "Running stage 'tune@lora'" not in result.stdout
    for kept in ("models/lora/seed0/trainable.safetensors", "results/lora/seed0/predictions.jsonl",
                 "results/lora/seed0/metrics.json", "results/lora/lr_selection.json"):
        assert (project / kept).is_file(), kept
    # With params.yaml restored, DVC restores the stamp it removed from its run cache and
    # runs nothing.
    again = run_tool(["dvc", "repro"], project, timeout=600).stdout
    assert not [line for line in again.splitlines() if line.startswith("Running stage")], again
    assert (project / "results/.validated").is_file()
    assert dvc_status(project) == {}


def test_exp_run_with_a_changed_rank_compares_with_its_baseline(project):
    run_tool(["dvc", "exp", "run", "-n", "rank16", "-S", "methods.lora.options.r=16"], project, timeout=1200)
    rows = json.loads(run_tool(["dvc", "exp", "show", "--json"], project).stdout)
    baseline = next(row for row in rows if row["rev"] != "workspace")
    experiment = next(exp for exp in baseline["experiments"] if exp["name"] == "rank16")["revs"][0]

    def metric(rev: dict) -> dict:
        return rev["data"]["metrics"]["results/headline.json"]["data"]

    # THE metric is the only one: per method the seed means. One seed has no interval: the
    # file holds null, which DVC leaves out.
    assert set(baseline["data"]["metrics"]) == set(experiment["data"]["metrics"]) == {"results/headline.json"}
    for rev in (baseline, experiment):
        assert list(metric(rev)) == list(METHODS)
        assert all(set(entry) == {"cf_em%", "f_em%"} for entry in metric(rev).values())
    assert json.loads((project / "results/headline.json").read_text())["lora"]["cf_em%±"] is None
    assert experiment["data"]["params"]["params.yaml"]["data"]["methods"]["lora"]["options"]["r"] == 16
    # Each run's own numbers stay in git: LoRA's trainable parameters grow with its rank.
    committed = json.loads(run_tool(["git", "show", "HEAD:results/lora/seed0/headline.json"], project).stdout)
    rank16 = json.loads((project / "results/lora/seed0/headline.json").read_text())
    assert rank16["trainable_params"] == 2 * committed["trainable_params"]


def test_a_queued_experiment_logs_into_the_checkout_s_store_beside_the_others(project):
    """`dvc exp run --queue` stages the experiment; `--run-all` runs it in a temporary copy of
    the workspace, which DVC deletes: its MLflow runs are in the checkout's store, and every
    rank's LoRA run is there, each its own configuration under the one pipeline run."""
    run_tool(["dvc", "exp", "run", "--queue", "-n", "rank4", "-S", "methods.lora.options.r=4"], project)
    run_tool(["dvc", "exp", "run", "--run-all"], project, timeout=1200)
    # The finished task's State and Executor columns would crowd `dvc exp show` (README).
    run_tool(["dvc", "queue", "remove", "--success"], project)
    assert not list((project / ".dvc" / "tmp" / "exps").glob("tmp*/mlflow.db"))
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cfqa-dvc")
    runs = client.search_runs([experiment.experiment_id])          # active runs only
    lora = {run.data.params["options.r"]: run for run in runs if run.info.run_name == "lora-seed0"}
    assert set(lora) == {"8", "16", "4"}                             # the baseline's run is kept
    assert len({run.data.tags["config_hash"] for run in lora.values()}) == 3
    assert lora["4"].data.tags["dvc_experiment"] == "rank4" and lora["16"].data.tags["dvc_experiment"] == "rank16"
    assert len({run.data.tags["mlflow.parentRunId"] for run in lora.values()}) == 1
    assert all(run.info.status == "FINISHED" for run in lora.values())


def test_exp_show_of_changed_columns_fits_a_terminal_and_names_the_parameter(project):
    """After the rank-16 and the queued rank-4 experiments, as a 120-column terminal shows it
    (COLUMNS): the changed parameter and lora's metric columns; DVC squeezes changed dependency
    hashes into one "…" column."""
    shown = subprocess.run(["dvc", "exp", "show", "--only-changed", "--no-pager"], cwd=project, capture_output=True,
                           text=True, env=tool_env(COLUMNS="120"), timeout=300, check=True).stdout
    print(f"dvc exp show --only-changed at 120 columns:\n{shown}")     # shown with pytest -s or -rP
    lines = shown.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= 120, shown
    header = next(line for line in lines if "Experiment" in line).split()
    assert "methods.lora.options.r" in header, shown
    # Only lora's numbers changed (those that differ between the ranks); the interval is null
    # with one seed, so it is no column.
    metrics = [column for column in header if column.endswith("%") or column.endswith("%±")]
    assert metrics and set(metrics) <= {"lora.cf_em%", "lora.f_em%"}, shown
    assert any("rank16" in line and " 16 " in line for line in lines), shown
    assert any("rank4" in line and " 4 " in line for line in lines), shown
