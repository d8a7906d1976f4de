"""What a stage's jobs need where they run (a GPU, the network, memory and runtime at each
scale) is declared once, in the stage table (workflow/cfqa/dag/table.py), and every execution
profile gets it from there: every rule x profile x scale is walked, dry runs show Snakemake
handing those resources to the jobs, and the README's table is the table's."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cfqa.config import deep_merge, load_schema, read_params
from cfqa.dag import SCALES, STAGES, job_resources, local_stages
from cfqa.dag.needs_table import markdown
from pipeline_support import PROJECT, profile_settings, run_tool

PROFILES = ("default", "local-gpus", "slurm", "kubernetes")
T5_LARGE = PROJECT / "workflow" / "profiles" / "disentqa-t5-large" / "params.yaml"
# params of each scale: the default and the t5-large profile over it.
PARAMS_FILES = {"embedded": [PROJECT / "params.yaml"], "t5_large": [PROJECT / "params.yaml", T5_LARGE]}
GPU_STAGES = {"tune", "train", "evaluate"}
CPU_PARTITION, GPU_PARTITION = "${CFQA_SLURM_CPU_PARTITION}", "${CFQA_SLURM_GPU_PARTITION}"
# Profile keys that need an executor or storage plugin or a binary absent where tests run.
NEEDS_PLUGINS = {"executor", "software-deployment-method", "apptainer-args", "container-image",
                 "default-storage-provider", "default-storage-prefix", "kubernetes-namespace"}


def params_at(scale: str) -> dict:
    return read_params(PARAMS_FILES[scale])


def job_request(settings: dict, name: str, params: dict) -> dict:
    """What a job of stage `name` gets under a profile, by Snakemake's precedence: the rule's
    resources (the table's), the profile's set-resources over them, its default-resources for
    keys neither sets."""
    request = dict(job_resources(name, params))
    for key, value in (settings.get("default-resources") or {}).items():
        request.setdefault(key, value)
    request.update((settings.get("set-resources") or {}).get(name) or {})
    return request


def test_every_stage_declares_its_needs_at_every_scale():
    assert tuple(load_schema()["properties"]["scale"]["enum"]) == SCALES
    for spec in STAGES:
        for scale in SCALES:
            size = spec.needs.resources(scale)
            assert size.mem_mb > 0 and size.runtime_min > 0, (spec.name, scale)
    assert {s.name for s in STAGES if s.needs.gpu} == GPU_STAGES
    # The CLI's commands of a run (split by method) are the ones that check train.device: the GPU stages.
    assert {s.name for s in STAGES if s.runs_model} == GPU_STAGES
    assert [s.name for s in STAGES if s.needs.data_parallel] == ["train"]
    # t5-large is bigger in every stage.
    for spec in STAGES:
        small, large = spec.needs.resources("embedded"), spec.needs.resources("t5_large")
        assert large.mem_mb >= small.mem_mb and large.runtime_min >= small.runtime_min, spec.name


def test_network_stages_run_where_snakemake_runs():
    """Only `fetch` reads the network (data and hub backbones into the run's cache): it runs on
    the login node (a local rule) at every scale; pretrain then reads the cache offline."""
    assert local_stages(params_at("embedded")) == ["validate", "fetch", "report"]
    assert local_stages(params_at("t5_large")) == ["validate", "fetch", "report"]
    hub = deep_merge(params_at("embedded"), {"pretrain": {"hub_id": "EleutherAI/gpt-neo-125m"}})
    assert [s.name for s in STAGES if s.needs.network(hub)] == ["fetch"]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_rule_gets_the_table_needs_under_every_profile(profile, scale):
    settings = profile_settings(profile)
    params = params_at(scale)
    for spec in STAGES:
        request = job_request(settings, spec.name, params)
        size = spec.needs.resources(scale)
        assert (request["mem_mb"], request["runtime"]) == (size.mem_mb, size.runtime_min), (profile, spec.name)
        assert request.get("gpu") == (1 if spec.needs.gpu else None), (profile, spec.name)
        if spec.needs.gpu:
            assert request["gpu_manufacturer"] == "nvidia", (profile, spec.name)      # Kubernetes' nvidia.com/gpu
        if profile == "slurm":
            expected = GPU_PARTITION if spec.needs.gpu else CPU_PARTITION
            assert request["slurm_partition"] == expected, spec.name
    if profile == "slurm":       # every stage the profile names is a GPU stage of the table
        assert set(settings["set-resources"]) == GPU_STAGES
    if profile == "local-gpus":  # Snakemake counts the box's GPUs: one job per GPU
        assert settings["resources"]["gpu"] >= 2


def dry_run_jobs(profile: str, tmp_path: Path, *extra: str) -> dict[str, dict]:
    """rule -> {"resources": {...}, "shell": str} from a forced dry run with the profile (less
    the keys that need plugins or binaries absent here: the local executor runs it, so which
    rules stay local is checked by the SLURM test, tests/test_slurm_cluster.py)."""
    settings = {k: v for k, v in profile_settings(profile).items() if k not in NEEDS_PLUGINS}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings))
    out = run_tool(["snakemake", "--dry-run", "--forceall", "--nolock", "--printshellcmds", "--profile",
                    str(tmp_path), *extra], PROJECT).stdout
    jobs = {}
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", out):
        head = re.search(r"^(local)?rule (\w+):$", block, flags=re.M)
        resources = re.search(r"^    resources: (.*)$", block, flags=re.M)
        if head is None or resources is None:
            continue
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        jobs[head[2]] = {"resources": dict(item.split("=", 1) for item in resources[1].split(", ")),
                         "shell": shell[1] if shell else ""}
    return jobs


@pytest.mark.parametrize("profile", ["slurm", "kubernetes"])
def test_cluster_profile_dry_run_hands_each_job_the_table_needs(profile, tmp_path):
    """Snakemake applies the rules' resources and the profile's as the walk above assumes."""
    jobs = dry_run_jobs(profile, tmp_path, "--configfile", str(T5_LARGE))
    assert set(jobs) == {s.name for s in STAGES} | {"all"}
    for spec in STAGES:
        job = jobs[spec.name]
        size = spec.needs.resources("t5_large")
        assert job["resources"]["mem_mb"] == str(size.mem_mb) and job["resources"]["runtime"] == str(size.runtime_min)
        assert job["resources"].get("gpu") == ("1" if spec.needs.gpu else None), spec.name
        if profile == "slurm":
            assert job["resources"]["slurm_partition"] == (GPU_PARTITION if spec.needs.gpu else CPU_PARTITION)
        # Every job starts through cfqa.launch with the checkout's code hash; GPU jobs with their GPUs.
        assert f"python -m cfqa.launch --stage {spec.name} --code " in job["shell"], spec.name
        assert (" --gpus 1" in job["shell"]) == spec.needs.gpu, spec.name


def test_more_gpus_for_train_run_it_data_parallel(tmp_path):
    jobs = dry_run_jobs("kubernetes", tmp_path, "--configfile", str(T5_LARGE), "--set-resources", "train:gpu=4")
    assert jobs["train"]["resources"]["gpu"] == "4"
    assert " --gpus 4 --data-parallel -- cfqa " in jobs["train"]["shell"]
    assert " --gpus 1 -- cfqa " in jobs["evaluate"]["shell"]          # one GPU: one process


def test_readme_shows_the_t5_large_needs_from_the_table():
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    table = markdown(params_at("t5_large"))
    assert table in readme, "regenerate the README's table: python -m cfqa.dag --needs " \
                            "workflow/profiles/disentqa-t5-large/params.yaml"
