"""The Snakefile and dvc.yaml describe one DAG: the same stages, commands, inputs, outputs,
and the same params keys (workflow/cfqa/dag.py)."""
from __future__ import annotations

import re

import pytest
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from cfqa.config import load
from cfqa.dag import stage_param_keys
from pipeline_support import PROJECT, run_tool

JOB = re.compile(r"^(?:local)?rule (?P<rule>\w+):$")


def snakemake_jobs() -> dict[str, dict]:
    """stage name (DVC style: rule or rule@method) -> cmd, inputs, outputs, from a dry run."""
    out = run_tool(["snakemake", "--dry-run", "--forceall", "--printshellcmds", "--cores", "1"], PROJECT).stdout
    jobs, current = {}, None
    for line in out.splitlines():
        if match := JOB.match(line.strip()):
            current = {"rule": match["rule"], "inputs": set(), "outputs": set(), "wildcards": {}}
            continue
        if current is None:
            continue
        stripped = line.strip()
        for field in ("input", "output"):
            if stripped.startswith(f"{field}: "):
                current[f"{field}s"] = {p.strip() for p in stripped[len(field) + 2:].split(",")}
        if stripped.startswith("wildcards: "):
            current["wildcards"] = dict(w.split("=") for w in stripped[len("wildcards: "):].split(", "))
        if stripped.startswith("Shell command: "):
            current["cmd"] = stripped[len("Shell command: "):]
        if stripped == "" and "cmd" in current:
            method = current["wildcards"].get("method")
            jobs[current["rule"] + (f"@{method}" if method else "")] = current
            current = None
    if current and "cmd" in current:
        method = current["wildcards"].get("method")
        jobs[current["rule"] + (f"@{method}" if method else "")] = current
    return jobs


def dvc_stages() -> dict[str, dict]:
    with Repo(str(PROJECT)) as repo:
        stages = {}
        for stage in repo.index.stages:
            params = [key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params]
            stages[stage.addressing] = {
                "cmd": stage.cmd,
                "inputs": {dep.def_path for dep in stage.deps if not isinstance(dep, ParamsDependency)},
                "outputs": {out.def_path for out in stage.outs},
                "params": params,
            }
        return stages


@pytest.fixture(scope="module")
def both():
    return snakemake_jobs(), dvc_stages()


def test_same_stages(both):
    snakemake, dvc = both
    assert set(snakemake) - {"all"} == set(dvc)
    methods = list(load([PROJECT / "params.yaml"]).methods)
    assert {f"train@{m}" for m in methods} <= set(dvc)


def test_same_commands_inputs_outputs(both):
    snakemake, dvc = both
    for name, stage in dvc.items():
        job = snakemake[name]
        assert job["cmd"] == stage["cmd"], name
        assert job["inputs"] == stage["inputs"], name
        assert job["outputs"] == stage["outputs"], name


def test_dvc_params_match_the_stage_param_table(both):
    _, dvc = both
    for name, stage in dvc.items():
        rule, _, method = name.partition("@")
        assert sorted(stage["params"]) == sorted(stage_param_keys(rule, method or None)), name
