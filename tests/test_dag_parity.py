"""One DAG, two engines: dvc.yaml is what the stage table (cfqa.dag) generates, and for a
two-method, two-seed configuration the Snakemake jobs and the DVC stages have the same names,
commands, inputs, outputs, params and code. A Snakemake job's shell is DVC's command started
by cfqa.launch, with its stderr and stdout also written to the job's stderr log
(cfqa.dag.job_shell)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from cfqa.dag import DIMENSIONS, VALIDATED, code_hash, fill, job_shell, lookup, stage_param_keys
from cfqa.dag import stage as stage_spec
from cfqa.dag.dvc_yaml import render
from pipeline_support import PROJECT, run_tool
from project_copy import copy_project
from test_cli_stages import assert_parser_takes_exactly

JOB = re.compile(r"^(?:local)?rule (?P<rule>\w+):$")
TWO_METHODS = ("full", "lora")
TWO_SEEDS = (0, 1)
RUNS = [(method, seed) for method in TWO_METHODS for seed in TWO_SEEDS]

# Each Snakemake job's params (the params.yaml slice and the code hash), read through
# Snakemake's API from the loaded rules: a dry run does not print params.
SNAKEMAKE_PARAMS = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings

runs = [run.split("-") for run in sys.argv[1:]]
jobs = {}
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"))._workflow
    for rule in workflow.rules:
        if "slice" not in rule.params.keys():
            continue
        if set(rule.wildcard_names) == {"method"}:
            for method in sorted({method for method, _ in runs}):
                jobs[f"{rule.name}@{method}"] = {"slice": rule.params.slice({"method": method}),
                                                 "code": rule.params.code}
        elif rule.wildcard_names:
            assert set(rule.wildcard_names) == {"method", "seed"}, rule.wildcard_names
            for method, seed in runs:
                jobs[f"{rule.name}@{method}-{seed}"] = {"slice": rule.params.slice({"method": method, "seed": seed}),
                                                        "code": rule.params.code}
        else:
            jobs[rule.name] = {"slice": rule.params.slice, "code": rule.params.code}
print(json.dumps(jobs))
"""


def snakemake_jobs(root: Path) -> dict[str, dict]:
    """stage name (DVC style: rule, or rule@method-seed for a DVC matrix) -> cmd, inputs,
    outputs, from a dry run."""
    out = run_tool(["snakemake", "--dry-run", "--forceall", "--printshellcmds", "--cores", "1"], root).stdout
    jobs, current = {}, None

    def finish(job):
        values = [job["wildcards"][d.name] for d in DIMENSIONS if d.name in job["wildcards"]]
        jobs[job["rule"] + (f"@{'-'.join(values)}" if values else "")] = job

    for line in out.splitlines():
        stripped = line.strip()
        if match := JOB.match(stripped):
            current = {"rule": match["rule"], "inputs": set(), "outputs": set(), "logs": set(), "wildcards": {}}
            continue
        if current is None:
            continue
        for field in ("input", "output", "log"):
            if stripped.startswith(f"{field}: "):
                current[f"{field}s"] = {p.strip() for p in stripped[len(field) + 2:].split(",")}
        if stripped.startswith("wildcards: "):
            current["wildcards"] = dict(w.split("=") for w in stripped[len("wildcards: "):].split(", "))
        if stripped.startswith("Shell command: "):
            current["cmd"] = stripped[len("Shell command: "):]
        if stripped == "" and "cmd" in current:
            finish(current)
            current = None
    if current and "cmd" in current:
        finish(current)
    return jobs


def dvc_stages(root: Path) -> dict[str, dict]:
    with Repo(str(root)) as repo:
        stages = {}
        for stage in repo.index.stages:
            stages[stage.name] = {
                "cmd": stage.cmd,
                "deps": [dep.def_path for dep in stage.deps if not isinstance(dep, ParamsDependency)],
                "outputs": {out.def_path for out in stage.outs},
                "params": [key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params],
            }
        return stages


def is_code(path: str) -> bool:
    return path.startswith("workflow/")


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory) -> Path:
    """The project with two methods and two seeds in params.yaml and dvc.yaml regenerated
    for them."""
    root = copy_project(tmp_path_factory.mktemp("dag"))
    run_tool(["git", "init", "-q"], root)  # DVC reads a project inside a git repository
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["methods"] = {name: params["methods"][name] for name in TWO_METHODS}
    params["seeds"] = list(TWO_SEEDS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_tool([sys.executable, "-m", "cfqa.dag", "--write", "dvc.yaml"], root)
    return root


@pytest.fixture(scope="module")
def both(two_methods):
    return snakemake_jobs(two_methods), dvc_stages(two_methods)


def test_committed_dvc_yaml_is_generated_from_the_table():
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    assert (PROJECT / "dvc.yaml").read_text() == render(params), \
        "dvc.yaml is stale: regenerate it with `python -m cfqa.dag --write dvc.yaml`"


def test_check_command_reports_a_stale_dvc_yaml(two_methods):
    stale = two_methods / "stale.yaml"
    stale.write_text((two_methods / "dvc.yaml").read_text().replace("--seed ${item.seed}", "--seed 0"))
    result = subprocess.run([sys.executable, "-m", "cfqa.dag", "--check", str(stale)], cwd=two_methods,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "python -m cfqa.dag --write" in result.stderr


def test_same_stages(both):
    snakemake, dvc = both
    assert set(snakemake) - {"all"} == set(dvc)
    assert {name for name in dvc if "@" in name} == ({f"{s}@{m}-{seed}" for s in ("train", "evaluate")
                                                      for m, seed in RUNS}
                                                     | {f"tune@{m}" for m in {m for m, _ in RUNS}})


def test_same_commands_inputs_outputs(both, two_methods):
    snakemake, dvc = both
    for name, stage in dvc.items():
        job = snakemake[name]
        rule, _, run = name.partition("@")
        wildcards = dict(zip(("method", "seed"), run.split("-"))) if run else {}
        spec = stage_spec(rule)
        cli_log, stderr_log = fill(spec.log, wildcards), fill(spec.stderr_log, wildcards)
        assert job["cmd"] == job_shell(rule, stage["cmd"], stderr_log, code=code_hash(rule, two_methods),
                                       gpus="1"), name
        assert stage["cmd"].startswith(f"cfqa --log-file {cli_log} {rule} "), name
        assert job["logs"] == {cli_log, stderr_log}, name
        assert job["inputs"] == {p for p in stage["deps"] if not is_code(p)}, name
        # Snakemake also names the files DVC must not track (commit, machine, timings: new bytes every run).
        untracked = {fill(o.path, wildcards) for o in stage_spec(rule).outputs.values() if o.kind == "untracked"}
        assert job["outputs"] == stage["outputs"] | untracked, name
    assert {"models/base", "models/base_lm", "models/lora/seed1"} <= snakemake["evaluate@lora-1"]["inputs"]
    assert snakemake["train@lora-1"]["outputs"] == {"models/lora/seed1", "results/lora/seed1/train.json",
                                                    "results/lora/seed1/train_curve.csv"}
    assert snakemake["evaluate@lora-1"]["outputs"] == {f"results/lora/seed1/{name}" for name in (
        "predictions.jsonl", "per_question.jsonl", "metrics.json", "headline.json", "evaluation_run.json")}
    assert " --seed 1 " in snakemake["evaluate@lora-1"]["cmd"] + " "
    assert "--model models/lora/seed1 --results results/lora/seed1" in snakemake["evaluate@lora-1"]["cmd"]
    assert "--log-file logs/train/lora/seed1.log" in snakemake["train@lora-1"]["cmd"]
    assert snakemake["train@lora-1"]["cmd"].endswith(" 2>&1 | tee -i logs/train/lora/seed1.stderr.log >&2")
    assert "tee" not in dvc["train@lora-1"]["cmd"]
    # The report waits for every (method, seed) run.
    assert {f"results/{m}/seed{seed}/{name}" for m, seed in RUNS
            for name in ("metrics.json", "per_question.jsonl", "train.json", "train_curve.csv")} <= \
        snakemake["report"]["inputs"]


def test_the_cli_parses_every_command_of_both_engines_with_exactly_its_options(both):
    """Each job's `cfqa` command, as Snakemake runs it (behind cfqa.launch and tee) and as DVC
    runs it, parses with the stage's CLI options, every one of them passed (cfqa.dag.table
    declares both)."""
    snakemake, dvc = both
    for name, stage in dvc.items():
        launched = snakemake[name]["cmd"]
        cfqa_command = launched[launched.index(" -- cfqa ") + len(" -- "):launched.index(" 2>&1 | tee ")]
        for cmd in (cfqa_command, stage["cmd"]):
            args = assert_parser_takes_exactly(cmd)
            assert args.command == name.partition("@")[0], cmd


def test_same_params_and_code(both, two_methods):
    _, dvc = both
    out = run_tool([sys.executable, "-c", SNAKEMAKE_PARAMS, *(f"{m}-{seed}" for m, seed in RUNS)],
                   two_methods).stdout
    snakemake = json.loads(out.strip().splitlines()[-1])
    params = yaml.safe_load((two_methods / "params.yaml").read_text())
    assert set(snakemake) == set(dvc)
    for name, stage in dvc.items():
        rule, _, run = name.partition("@")
        keys = stage_param_keys(rule, run.split("-")[0] or None)
        assert stage["params"] == keys, name
        assert snakemake[name]["slice"] == {key: lookup(params, key) for key in keys}, name
        # The code hash Snakemake holds is the hash of the files DVC lists as code deps.
        assert [p for p in stage["deps"] if is_code(p)], name
        assert snakemake[name]["code"] == code_hash(rule, two_methods), name


def test_seed_values_come_from_params(tmp_path):
    """dvc.yaml names no seed except in the report's deps: DVC expands the matrix from
    params.yaml, so any seed list (here 3 and 7) yields method x seed stages."""
    params = {"methods": {"full": {}, "lora": {}}, "seeds": [3, 7]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text(render(params))
    assert "seed3" not in yaml.safe_dump(yaml.safe_load(render(params))["stages"]["train"])
    run_tool(["git", "init", "-q"], tmp_path)
    run_tool(["dvc", "init", "-q"], tmp_path)
    stages = dvc_stages(tmp_path)
    runs = {f"{m}-{s}" for m in ("full", "lora") for s in (3, 7)}
    assert {name for name in stages if "@" in name} == ({f"{s}@{r}" for s in ("train", "evaluate") for r in runs}
                                                        | {"tune@full", "tune@lora"})
    lora_7 = stages["evaluate@lora-7"]
    assert lora_7["cmd"].startswith("cfqa --log-file logs/evaluate/lora/seed7.log evaluate --params params.yaml "
                                    "--method lora --seed 7 ")
    assert lora_7["cmd"].endswith("--models models --model models/lora/seed7 --results results/lora/seed7")
    assert {"models/lora/seed7", "results/lora/seed7/train.json"} <= set(lora_7["deps"])
    assert "methods.lora" in lora_7["params"]
    assert {f"results/{r.replace('-', '/seed')}/metrics.json" for r in runs} <= set(stages["report"]["deps"])


def test_validation_runs_first_and_every_stage_waits_for_it(both):
    """A bad params.yaml stops `dvc repro` at the validate stage, before any stage removes
    its outputs: every other stage depends on the stamp, the stamp on params.yaml."""
    snakemake, dvc = both
    assert dvc["validate"]["cmd"] == ("cfqa --log-file logs/validate.log validate --params params.yaml "
                                      f"--out {VALIDATED}")
    assert {p for p in dvc["validate"]["deps"] if not is_code(p)} == {"params.yaml"}
    assert dvc["validate"]["outputs"] == {VALIDATED}
    for name, stage in dvc.items():
        if name != "validate":
            assert VALIDATED in stage["deps"], name
            assert VALIDATED in snakemake[name]["inputs"], name
