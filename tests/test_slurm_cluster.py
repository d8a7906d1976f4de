"""The real cluster path, on a real SLURM cluster on this machine (tests/cluster/local_slurm.sh:
Debian's slurmctld + slurmd + munge on 127.0.0.1, a `cpu` and a `gpu` partition, GPUs the
scheduler counts). The README's cluster steps run as written through workflow/profiles/slurm,
on the tiny configuration, without Apptainer (CFQA_CONTAINERS=none) and with the test
cluster's overlay (tests/cluster/profile: no job accounting here). Every job's request is read
back from the scheduler: the GPU stages asked for a GPU on the GPU partition, the others ran on
the CPU partition, the network stages never became jobs, and each got the stage table's memory
and time limit. Like the README's profile, the test's params file sets its own run root: the run
writes nothing outside it but the state every run shares (Snakemake's, the MLflow store), and a
second run has nothing to do. The outputs equal those of the test run's local Snakemake run of
the same params with one more method and seed (tests/smoke_run.py: workflow/profiles/local-gpus
with a fake device list), and a run set to `train.device: cuda` stops at its first GPU job with
one line, exit 2, on the cluster and locally.

Needs root and slurmctld, slurmd and munge (`make slurm-local`); skipped without them, except
in CI (CI=true), where a missing tool fails."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cfqa.config import PROJECT_ROOT, deep_merge, read_params
from cfqa.contract import read_train_record
from cfqa.contract.run_info import package_sha256
from cfqa.dag import STAGES, local_stages, stage
from cfqa.io.timing_files import is_timing_file
from pipeline_support import DEFAULT_FOLDERS, PROJECT, SHARED_STATE, commit_all, file_stamps, tool_env
from project_copy import copy_project
from required_tools import missing as tool_missing

pytestmark = pytest.mark.slow
SCRIPT = PROJECT / "tests" / "cluster" / "local_slurm.sh"
OVERLAY = "tests/cluster/profile"
PARAMS = "cluster-test.yaml"            # the tiny configuration, one method and one seed
RUN_ROOT = "runs/tiny"                  # the params file's run root, as every profile has its own
METHOD, SEED = "full", 0
PARTITIONS = {"cpu": "cpu", "gpu": "gpu"}   # the README's exports; the test cluster's names
# Files whose bytes hold times, the machine or the checkout (speed, wall time, each copy's own
# commit and path): compared field by field or not at all. Timing files (`*.timing.json`) hold
# only wall times.
TIMED = {"train.json", "headline.json", "evaluation_run.json", "summary.json", "lr_selection.json"}


@pytest.fixture(scope="module")
def cluster():
    """The local cluster, started if it is not running, stopped afterwards if this test started it."""
    missing = [tool for tool in ("slurmctld", "slurmd", "munged", "sbatch") if shutil.which(tool) is None]
    reason = (f"{', '.join(missing)} not installed: apt-get install -y --no-install-recommends slurmctld slurmd "
              f"slurm-client munge (`make slurm-local`)" if missing else
              None if os.geteuid() == 0 else "the local SLURM cluster needs root (slurmd starts jobs as their user)")
    if reason:
        tool_missing(reason)
    running = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    # A job asking for more memory than the node has would wait in the queue for ever.
    node = subprocess.run(["scontrol", "show", "node", "--oneliner"], capture_output=True, text=True, check=True).stdout
    largest = max(s.needs.resources("embedded").mem_mb for s in STAGES)
    assert int(re.search(r"RealMemory=(\d+)", node)[1]) >= largest, f"the node has less than {largest} MB: {node}"
    yield
    if not running:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120)


def tiny_params() -> dict:
    """tests/fixtures/params-tiny.yaml with one method and one seed, over params.yaml."""
    tiny = yaml.safe_load((PROJECT_ROOT / "tests/fixtures/params-tiny.yaml").read_text())
    methods = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["methods"]
    return deep_merge(tiny, {"methods": {name: None for name in methods if name != METHOD}, "seeds": [SEED],
                             "tracking": {"experiment": "cfqa-cluster"}, "run_root": RUN_ROOT})


def project(root: Path) -> Path:
    copy_project(root)
    (root / PARAMS).write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    commit_all(root, "cluster test")
    return root


def environment(**extra: str) -> dict[str, str]:
    env = tool_env(**extra)
    for name in ("CFQA_GPU_DEVICES", "SLURM_CONF"):
        if name not in extra:
            env.pop(name, None)
    return env


def readme_cluster_steps() -> str:
    """The README's SLURM steps, the shell block under "### SLURM"."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### SLURM\n", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S)[1]


def as_tested(steps: str, configfile: str) -> str:
    """The README's steps on this machine: the tiny params instead of t5-large's, and the test
    cluster's overlay after the slurm profile; nothing else changes."""
    params_line = "params=workflow/profiles/disentqa-t5-large/params.yaml"
    assert steps.count(params_line) == 1 and steps.count(" --profile workflow/profiles/slurm ") == 2
    steps = steps.replace(params_line, f"params={configfile}")
    return re.sub(r"(?m)^(snakemake .*--profile workflow/profiles/slurm .*)$", rf"\1 --profile {OVERLAY}", steps)


def run_steps(root: Path, script: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root,
                            env=environment(CFQA_CONTAINERS="none"), capture_output=True, text=True, timeout=2400)
    return result, time.perf_counter() - started


@dataclass(frozen=True)
class ClusterRun:
    project: Path           # the checkout the README's steps ran in
    written: set[str]       # the files the run wrote or changed there, relative to it

    @property
    def root(self) -> Path:
        """The run's own files: its run root in the checkout."""
        return self.project / RUN_ROOT


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> ClusterRun:
    root = project(tmp_path_factory.mktemp("slurm") / "project")
    before = file_stamps(root)
    result, seconds = run_steps(root, as_tested(readme_cluster_steps(), PARAMS))
    print(f"the README's SLURM steps on the tiny configuration took {seconds:.0f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return ClusterRun(project=root, written={path for path, stamp in file_stamps(root).items() if before.get(path) != stamp})


@pytest.fixture(scope="module")
def local_run(smoke_run):
    """The tiny configuration run locally by Snakemake (tests/smoke_run.py: the local-gpus
    profile, one job per fake GPU): its params are this test's, with one more method and seed."""
    assert smoke_run.result.returncode == 0, smoke_run.result.stdout[-3000:] + smoke_run.result.stderr[-6000:]
    return smoke_run.root


def scheduler_jobs(root: Path) -> list[dict[str, str]]:
    """Every job the scheduler ran from `root`, as `scontrol show job` reports it (finished jobs
    stay listed for the cluster's MinJobAge, an hour)."""
    out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        if fields.get("WorkDir") == str(root):
            fields["rule"] = re.match(r"rule_([a-z]+?)(?:_wildcards_|$)", fields["Comment"])[1]
            jobs.append(fields)
    return jobs


def minutes(limit: str) -> int:
    days, _, clock = limit.rpartition("-")
    hours, mins, secs = map(int, clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins + (secs > 0)


def test_every_job_requests_what_the_stage_table_declares(slurm_run):
    params = read_params([slurm_run.project / "params.yaml", slurm_run.project / PARAMS])
    jobs = scheduler_jobs(slurm_run.project)
    local = set(local_stages(params))
    assert local == {"validate", "fetch", "report"}
    assert sorted(job["rule"] for job in jobs) == sorted(s.name for s in STAGES if s.name not in local)
    for job in jobs:
        needs = stage(job["rule"]).needs
        size = needs.resources("embedded")
        assert job["JobState"] == "COMPLETED", job
        assert job["Partition"] == PARTITIONS["gpu" if needs.gpu else "cpu"], job
        assert job.get("TresPerJob") == ("gres:gpu:1" if needs.gpu else None), job
        assert job["MinMemoryNode"] == f"{size.mem_mb}M", job
        assert minutes(job["TimeLimit"]) == size.runtime_min, job


def file_hashes(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in ("data", "models", "results") for path in sorted((root / folder).rglob("*"))
            if path.is_file() and path.name not in TIMED and not is_timing_file(path) and not path.name.endswith(".lock")}


def test_the_run_writes_nothing_outside_its_root(slurm_run):
    outside = {path for path in slurm_run.written if not path.startswith((f"{RUN_ROOT}/", *SHARED_STATE))}
    assert not outside, sorted(outside)
    assert not [folder for folder in DEFAULT_FOLDERS if (slurm_run.project / folder).exists()]
    for path in ("reports/index.html", f"results/{METHOD}/seed{SEED}/metrics.json",
                 f"models/{METHOD}/seed{SEED}/trainable.safetensors", f"logs/train/{METHOD}/seed{SEED}.stderr.log",
                 f"logs/benchmarks/train/{METHOD}/seed{SEED}.tsv"):
        assert f"{RUN_ROOT}/{path}" in slurm_run.written, path
    assert "mlflow.db" in slurm_run.written


def test_a_second_run_has_nothing_to_do(slurm_run):
    """The README's steps again, step 2 as a dry run."""
    steps = as_tested(readme_cluster_steps(), PARAMS).splitlines()
    again = [f"{line} --dry-run" if line.startswith("snakemake --profile") else line
             for line in steps if not line.startswith("snakemake fetch ")]
    result, _ = run_steps(slurm_run.project, "\n".join(again))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def test_cluster_outputs_equal_the_local_run(slurm_run, local_run):
    cluster, local = file_hashes(slurm_run.root), file_hashes(local_run)
    assert set(cluster) <= set(local), sorted(set(cluster) - set(local))
    assert cluster == {path: local[path] for path in cluster}
    assert {f"models/{METHOD}/seed{SEED}/trainable.safetensors", f"results/{METHOD}/seed{SEED}/predictions.jsonl",
            f"results/{METHOD}/seed{SEED}/metrics.json", "data/stats.json"} <= set(cluster)
    selection = [json.loads((root / f"results/{METHOD}/lr_selection.json").read_text())
                 for root in (slurm_run.root, local_run)]
    assert [(s["chosen_lr"], s["trials"]) for s in selection][0] == [(s["chosen_lr"], s["trials"]) for s in selection][1]
    trained = [read_train_record(root / f"results/{METHOD}/seed{SEED}/train.json") for root in (slurm_run.root, local_run)]
    assert (trained[0].steps, trained[0].best_val_loss, trained[0].params) == \
        (trained[1].steps, trained[1].best_val_loss, trained[1].params)


def test_results_record_the_code_that_ran(slurm_run, local_run):
    """Each job imported its own checkout's package (workflow/ first on the path), and says so."""
    for checkout, root in ((slurm_run.project, slurm_run.root), (local_run, local_run)):
        run = read_train_record(root / f"results/{METHOD}/seed{SEED}/train.json").run
        assert run.code_path == str((checkout / "workflow" / "cfqa").resolve())
        assert run.code_sha256 == package_sha256(checkout / "workflow" / "cfqa")
        assert run.git_commit != "unknown" and run.git_dirty is False


def set_to_cuda(finished: Path, root: Path) -> Path:
    """A copy of a finished run with `train.device: cuda` in its params file: tune's params
    changed, so tune (the first GPU job) reruns, then train and evaluate would."""
    shutil.copytree(finished, root, symlinks=True)
    (root / PARAMS).write_text(yaml.safe_dump(deep_merge(tiny_params(), {"train": {"device": "cuda"}}), sort_keys=False))
    return root


def one_failing_line(log: Path) -> str:
    lines = log.read_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(rf"\S+ ERROR cfqa: cfqa tune: method '{METHOD}' seed 0: train\.device is cuda but found no "
                        r"usable CUDA device: torch \S+ is a CPU-only build \(no CUDA\); .*", lines[0]), lines[0]
    return lines[0]


def test_a_cuda_run_stops_at_its_first_gpu_job_on_the_cluster(slurm_run, tmp_path):
    root = set_to_cuda(slurm_run.project, tmp_path / "project")
    steps = as_tested(readme_cluster_steps(), PARAMS).splitlines()
    cluster_dag = [line for line in steps if not line.startswith("snakemake fetch ")]   # step 2
    result, _ = run_steps(root, "\n".join(cluster_dag))
    assert result.returncode != 0
    one_failing_line(root / RUN_ROOT / "logs" / "tune" / f"{METHOD}.stderr.log")
    jobs = scheduler_jobs(root)
    assert [(job["rule"], job["JobState"]) for job in jobs] == [("tune", "FAILED")]   # nothing after it
    slurm_log = next((root / ".snakemake" / "slurm_logs" / "rule_tune").rglob(f"{jobs[0]['JobId']}.log"))
    assert "returned non-zero exit status 2." in slurm_log.read_text()        # the CLI's exit status, in the job


def test_a_cuda_run_stops_at_its_first_gpu_job_locally(local_run, tmp_path):
    """The local run ran on params.yaml alone: its copy's params.yaml is set to cuda, for this
    test's method and seed."""
    root = tmp_path / "project"
    shutil.copytree(local_run, root, symlinks=True)
    params = deep_merge(yaml.safe_load((root / "params.yaml").read_text()), {"train": {"device": "cuda"}, "seeds": [SEED]})
    params["methods"] = {METHOD: params["methods"][METHOD]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run(["snakemake", "--profile", "workflow/profiles/default", "--cores", "1"], cwd=root,
                            env=environment(), capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    one_failing_line(root / "logs" / "tune" / f"{METHOD}.stderr.log")
    assert "Error in rule tune" in result.stdout + result.stderr
    assert "rule train:" not in result.stdout + result.stderr
