"""DVC as users meet it, on the tiny configuration (two methods, one seed) in a copy of the
project: `dvc repro` runs the DAG; an identical re-evaluation leaves `dvc status` clean; the
results go to the default remote and come back into a fresh clone with nothing to rerun in
either engine; `dvc exp run -S` gives an experiment `dvc exp show` compares with its
baseline, value by value."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cfqa.config import deep_merge
from cfqa.dag.dvc_yaml import dvc_document
from pipeline_support import PROJECT, run_tool, tool_env
from project_copy import copy_project

pytestmark = pytest.mark.slow
METHODS = ("full", "lora")
GIT = ["git", "-c", "user.email=ci@cfqa", "-c", "user.name=ci"]


def commit(root: Path, message: str) -> None:
    run_tool(GIT + ["add", "-A"], root)
    run_tool(GIT + ["commit", "-qm", message], root)


def dvc_status(root: Path) -> dict:
    return json.loads(run_tool(["dvc", "status", "--json"], root).stdout or "{}")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """tmp/work: the project on the tiny configuration, reproduced by DVC and committed. Its
    default remote (../cfqa-dvc-remote, from .dvc/config) is tmp/cfqa-dvc-remote."""
    root = copy_project(tmp_path_factory.mktemp("dvc") / "work")
    params = deep_merge(yaml.safe_load((PROJECT / "params.yaml").read_text()),
                        yaml.safe_load((PROJECT / "tests/fixtures/params-tiny.yaml").read_text()))
    params["methods"] = {name: params["methods"][name] for name in METHODS}
    params["seeds"] = [0]
    params["tracking"]["experiment"] = "cfqa-dvc"
    params["tune"].update(lr_factors=[1.0], trials=1)     # one grid point: the test is about DVC, not the grid
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_tool([sys.executable, "-m", "cfqa.dag", "--write", "dvc.yaml"], root)
    run_tool(["git", "init", "-q"], root)
    commit(root, "tiny configuration")
    run_tool(["dvc", "repro"], root, timeout=1500)
    commit(root, "results")
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
    run_tool(GIT + ["checkout", "--", "results"], project)


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

    def headline(rev: dict, method: str) -> dict:
        return rev["data"]["metrics"][f"results/{method}/seed0/headline.json"]["data"]

    for method in METHODS:
        for rev in (baseline, experiment):
            assert set(headline(rev, method)["test_contextual_em_pct"]) == {"factual", "counterfactual", "empty",
                                                                          "random"}
    # LoRA's trainable parameters grow with its rank; full fine-tuning is untouched.
    assert headline(experiment, "lora")["trainable_params"] == 2 * headline(baseline, "lora")["trainable_params"]
    assert headline(experiment, "full") == headline(baseline, "full")
    assert experiment["data"]["params"]["params.yaml"]["data"]["methods"]["lora"]["options"]["r"] == 16
