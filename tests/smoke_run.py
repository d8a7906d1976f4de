"""The tiny configuration's whole DAG run by Snakemake once per test run, in a temporary copy of
the project, as a box with a few GPUs runs it: workflow/profiles/local-gpus with a fake device
list (CUDA_VISIBLE_DEVICES=5,7), which pins each GPU job to its own device; on this CPU-only
machine the jobs then train on the CPU as configured.

tests/test_pipeline_smoke.py checks the run itself; tests/test_slurm_cluster.py compares the
cluster's outputs with it. `make test` runs both in one pytest-xdist worker, one after the other
(tests/conftest.py): the smoke tests change the run's params.yaml for a while."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline_support import commit_all, run_tool, tool_env
from project_copy import copy_project
from stage_results import TINY_METHODS, tiny_config

SMOKE_GROUP = "tiny-snakemake-run"
SMOKE_MODULES = ("test_pipeline_smoke.py", "test_slurm_cluster.py")
FAKE_DEVICES = "5,7"


@dataclass(frozen=True)
class SmokeRun:
    root: Path
    result: subprocess.CompletedProcess


def smoke_params() -> dict:
    """params.yaml with the tiny overrides, for full fine-tuning and LoRA: a Snakemake job costs
    about 6 s of imports (torch, transformers, peft) before its work, so the run holds the two
    methods the checks need; every other method runs through the same stage commands in-process
    (tests/test_pipeline_smoke.py)."""
    return tiny_config(TINY_METHODS)


def run_smoke(root: Path) -> SmokeRun:
    """The project in `root`, committed to git, run by Snakemake. --keep-going: every job that can
    run does, so a failure in one stage leaves the other stages' checks meaningful."""
    copy_project(root)
    (root / "params.yaml").write_text(yaml.safe_dump(smoke_params(), sort_keys=False))
    # Two seeds: the report's deps in dvc.yaml list every (method, seed).
    run_tool([sys.executable, "-m", "cfqa.dag", "--write", "dvc.yaml"], root)
    commit_all(root, "smoke")
    env = tool_env(CUDA_VISIBLE_DEVICES=FAKE_DEVICES, CFQA_GPU_LOCK_DIR=str(root.parent / "gpu-locks"))
    env.pop("SLURM_CONF", None)
    result = subprocess.run(["snakemake", "--profile", "workflow/profiles/local-gpus", "--cores", "2", "--keep-going"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    return SmokeRun(root=root, result=result)
