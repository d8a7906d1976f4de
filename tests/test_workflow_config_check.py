"""Snakemake stops on a bad configuration before building any job: the schema checks shapes,
the typed config (cfqa.config.from_dict) checks method options, and either names the key. The
worst settings of tests/bad_params.py go through `snakemake -n` (the line `cfqa validate`
prints, exit 2) and `dvc repro` (stopped by its validate stage, before any other)."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from bad_params import CASES
from pipeline_support import commit_all, tool_env
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
    assert result.returncode == 2, output
    assert "Building DAG of jobs" not in output and "rule download" not in output
    for text in expected:
        assert text in output, output


def test_invalid_shared_train_value_fails_before_any_job(project):
    result = dry_run_with(project, lambda params: params["train"].update(optimizer="sgd"))
    assert_fails_before_jobs(result, "optimizer", "sgd")


def test_missing_method_option_fails_before_any_job(project):
    # The schema leaves method options open; the typed config requires every key.
    result = dry_run_with(project, lambda params: params["methods"]["lora"]["options"].pop("r"))
    assert_fails_before_jobs(result, "cfqa: invalid parameters: params.yaml: methods.lora.options.r")


def test_a_valid_configuration_builds_the_dag_with_every_method_once_per_seed(project):
    result = dry_run_with(project, lambda params: params.update(seeds=[0, 2]))
    assert result.returncode == 0, result.stderr
    assert "rule download" in result.stdout
    assert "Building DAG of jobs" in result.stdout + result.stderr
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


# ---- the bad-settings table through both engines (slow: a Snakemake or DVC start each) ------

ENGINE_CASES = [case for case in CASES if case.engines]
# DVC parses params.yaml itself before any stage runs: a 100,000-deep file stops it with its own
# "maximum recursion depth exceeded", and an alias bomb exhausts its memory (8 GB in 5 minutes,
# measured) before `cfqa validate` can run; those two are left out here (see README).
DVC_CASES = [case for case in ENGINE_CASES if case.id not in ("100000-deep-list", "alias-bomb")]


@pytest.fixture(scope="module")
def engines_project(tmp_path_factory):
    """A copy of the project in its own git repository (DVC needs one) and its params.yaml."""
    root = copy_project(tmp_path_factory.mktemp("engines"))
    commit_all(root, "engines")
    return root, (root / "params.yaml").read_bytes()


def nonblank_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("case", ENGINE_CASES, ids=[case.id for case in ENGINE_CASES])
def test_snakemake_stops_a_bad_setting_with_the_one_line_of_cfqa_validate(engines_project, case):
    root, params = engines_project
    (root / "params.yaml").write_bytes(case.params_yaml(params))
    result = subprocess.run(["snakemake", "-n", "--cores", "1"], cwd=root, env=tool_env(),
                            capture_output=True, text=True, timeout=300)
    lines = nonblank_lines(result)
    assert result.returncode == 2 and len(lines) == 1, lines[-20:]
    assert lines[0].startswith("cfqa: ") and "params.yaml: " in lines[0] and case.expected in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", DVC_CASES, ids=[case.id for case in DVC_CASES])
def test_dvc_repro_stops_a_bad_setting_before_any_stage_after_validate(engines_project, case):
    """`dvc repro --dry` runs no command, so it cannot reject a value; the real `dvc repro` runs the
    validate stage first, which stops it. DVC ends every failure with its own status, 255."""
    root, params = engines_project
    (root / "params.yaml").write_bytes(case.params_yaml(params))
    result = subprocess.run(["dvc", "repro"], cwd=root, env=tool_env(), capture_output=True, text=True, timeout=300)
    lines = nonblank_lines(result)
    assert result.returncode == 255, lines[-20:]
    if case.whole_file:        # DVC reads params.yaml before running anything: its own one line
        (error,) = [line for line in lines if line.startswith("ERROR:")]
        assert error.startswith("ERROR: unable to read: 'params.yaml', is not valid utf-8"), lines
    else:
        (error,) = [line for line in lines if " ERROR cfqa: cfqa validate: " in line]
        assert "params.yaml: " in error and case.expected in error, error
        assert "ERROR: failed to reproduce 'validate'" in lines[-1]
    assert not (root / "data").exists() and not (root / "results" / ".validated").exists()
