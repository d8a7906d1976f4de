"""Snakemake stops on a bad configuration before building any job: the schema checks shapes,
the typed config (cfqa.config.from_dict) checks method options, and either names the key."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from pipeline_support import tool_env
from project_copy import copy_project


@pytest.fixture
def project(tmp_path):
    return copy_project(tmp_path)


def dry_run_with(project, change) -> subprocess.CompletedProcess:
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return subprocess.run(["snakemake", "--dry-run", "--cores", "1"], cwd=project, env=tool_env(),
                          capture_output=True, text=True, timeout=300)


def assert_fails_before_jobs(result, *expected: str):
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Building DAG of jobs" not in output and "rule download" not in output
    for text in expected:
        assert text in output, output


def test_valid_configuration_builds_the_dag(project):
    result = dry_run_with(project, lambda params: None)
    assert result.returncode == 0, result.stderr
    assert "rule download" in result.stdout
    assert "Building DAG of jobs" in result.stdout + result.stderr


def test_invalid_shared_train_value_fails_before_any_job(project):
    result = dry_run_with(project, lambda params: params["train"].update(optimizer="sgd"))
    assert_fails_before_jobs(result, "optimizer", "sgd")


def test_missing_method_option_fails_before_any_job(project):
    # The schema leaves method options open; the typed config requires every key.
    result = dry_run_with(project, lambda params: params["methods"]["lora"]["options"].pop("r"))
    assert_fails_before_jobs(result, "WorkflowError", "methods.lora.options.r")


def test_every_method_runs_once_per_seed(project):
    result = dry_run_with(project, lambda params: params.update(seeds=[0, 2]))
    assert result.returncode == 0, result.stderr
    jobs = {line.split()[0]: int(line.split()[1]) for line in result.stdout.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    methods = len(yaml.safe_load((project / "params.yaml").read_text())["methods"])
    assert jobs["train"] == jobs["evaluate"] == 2 * methods and jobs["report"] == 1
    assert "models/lora/seed2" in result.stdout and "results/lora/seed1" not in result.stdout


def test_a_seed_in_the_train_block_fails_before_any_job(project):
    # A run's seed is a value of `seeds` (the {seed} wildcard), never a train key.
    result = dry_run_with(project, lambda params: params["train"].update(seed=0))
    assert_fails_before_jobs(result, "train", "'seed' was unexpected")


def test_repeated_seed_fails_before_any_job(project):
    result = dry_run_with(project, lambda params: params.update(seeds=[1, 1]))
    assert_fails_before_jobs(result, "seeds", "non-unique")


@pytest.mark.parametrize("root", ["../elsewhere", "/tmp/run", "results/x", "runs/a b", "runs/x;echo hi"])
def test_a_run_root_outside_the_project_or_inside_its_outputs_fails_before_any_job(project, root):
    # The root is joined into every path and shell command: only plain relative folders pass.
    result = dry_run_with(project, lambda params: params.update(run_root=root))
    assert_fails_before_jobs(result, "run_root", repr(root))
