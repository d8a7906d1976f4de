"""cfqa.launch, how every Snakemake job starts: it refuses code other than the checkout's
(naming both hashes), pins a GPU job to devices no other job holds on a shared box (a fake
device list here), and starts a data-parallel stage given several GPUs as one process each."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cfqa.dag import code_hash
from cfqa.launch import data_parallel
from pipeline_support import PROJECT, tool_env
from project_copy import copy_project

LAUNCH = [sys.executable, "-m", "cfqa.launch"]


def launch(args: list[str], env: dict[str, str], cwd: Path = PROJECT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def test_the_checkout_code_runs(tmp_path):
    expected = code_hash("validate", PROJECT)
    result = launch(["--stage", "validate", "--code", expected, "--", sys.executable, "-c", "print('ran')"], tool_env())
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr


def test_code_other_than_the_checkout_is_refused_naming_both(tmp_path):
    """An image built before a change: its package differs from the checkout's in a file the
    stage runs. The job stops before the command, one line, exit 2."""
    checkout = copy_project(tmp_path / "checkout", under="workflow/")
    image = copy_project(tmp_path / "image", under="workflow/")
    with open(image / "workflow/cfqa/config.py", "a", encoding="utf-8") as handle:
        handle.write("\n# built before the last change\n")
    expected = code_hash("train", checkout)
    env = tool_env(PYTHONPATH=str(image / "workflow"))
    marker = tmp_path / "ran"
    result = launch(["--stage", "train", "--code", expected, "--", "touch", str(marker)], env, cwd=checkout)
    assert result.returncode == 2 and not marker.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    found = code_hash("train", image)
    assert f"stage train: the code this job would run ({image / 'workflow' / 'cfqa'}, code sha256 {found[:16]})" in lines[0]
    assert f"is not the checkout's (code sha256 {expected[:16]}" in lines[0]
    # A change the stage does not run (another stage's module) is no reason to refuse.
    shutil.copy(checkout / "workflow/cfqa/config.py", image / "workflow/cfqa/config.py")
    with open(image / "workflow/cfqa/stages/report.py", "a", encoding="utf-8") as handle:
        handle.write("\n# report only\n")
    assert launch(["--stage", "train", "--code", expected, "--", "touch", str(marker)], env,
                  cwd=checkout).returncode == 0
    assert marker.exists()


RECORD = """import json, os, sys, time
started = time.time()
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "w") as handle:
    json.dump({"device": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": started, "end": time.time()}, handle)
"""


@pytest.mark.slow     # runs three launcher processes that hold devices for seconds
def test_gpu_jobs_on_a_shared_box_each_get_their_own_device(tmp_path):
    """Three one-GPU jobs on a box listing devices 5 and 7: two run at once on different
    devices, the third waits for a device to be released, and none shares one."""
    script = tmp_path / "record.py"
    script.write_text(RECORD)
    env = tool_env(CFQA_GPU_DEVICES="5,7", CFQA_GPU_LOCK_DIR=str(tmp_path / "locks"))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    code = code_hash("train", PROJECT)
    jobs = [subprocess.Popen([*LAUNCH, "--stage", "train", "--code", code, "--gpus", "1", "--",
                              sys.executable, str(script), str(tmp_path / f"job{i}.json"), "4"],
                             cwd=PROJECT, env=env, stderr=subprocess.PIPE, text=True) for i in range(3)]
    errors = [job.communicate(timeout=120)[1] for job in jobs]
    assert all(job.returncode == 0 for job in jobs), errors
    records = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(3)]
    assert {r["device"] for r in records} == {"5", "7"}
    for first in range(3):
        for second in range(first + 1, 3):
            a, b = records[first], records[second]
            overlap = a["start"] < b["end"] and b["start"] < a["end"]
            assert not (overlap and a["device"] == b["device"]), records
    assert sum("waiting for 1 free GPU(s) of 5,7" in e for e in errors) == 1, errors
    assert all(f"pinned to CUDA device(s) {r['device']}" in e for r, e in zip(records, errors))


def test_without_a_device_list_nothing_is_pinned(tmp_path):
    """A cluster scheduler gives the job its devices: they are left as they are."""
    env = tool_env(CUDA_VISIBLE_DEVICES="3")
    env.pop("CFQA_GPU_DEVICES", None)
    result = launch(["--stage", "evaluate", "--code", code_hash("evaluate", PROJECT), "--gpus", "1", "--",
                     sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"], env)
    assert result.returncode == 0 and result.stdout == "3\n" and "pinned" not in result.stderr


def test_a_data_parallel_stage_on_several_gpus_runs_one_process_each():
    command = ["cfqa", "--log-file", "logs/train/full/seed0.log", "train", "--method", "full", "--seed", "0"]
    assert data_parallel(command, 4) == [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "4", "--num_machines", "1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "cfqa.cli", "--log-file", "logs/train/full/seed0.log", "train", "--method", "full", "--seed", "0"]


@pytest.mark.slow     # parses the Snakefile three times in a copy of the project
def test_the_snakefile_shares_the_boxs_gpus_when_the_run_counts_them(tmp_path):
    """`resources: gpu: N` (workflow/profiles/local-gpus) makes the Snakefile hand the jobs the
    device list: CUDA_VISIBLE_DEVICES of the run, else 0..N-1; without it, no list."""
    project = copy_project(tmp_path / "project")
    (project / "probe.smk").write_text('include: "Snakefile"\n'
                                       'print("DEVICES=" + str(os.environ.get("CFQA_GPU_DEVICES")))\n')
    base = ["snakemake", "-s", "probe.smk", "--dry-run", "--cores", "1", "validate"]

    def devices(*extra: str, **env: str) -> str:
        full = tool_env(**env)
        for name in ("CFQA_GPU_DEVICES", "CUDA_VISIBLE_DEVICES"):
            if name not in env:
                full.pop(name, None)
        out = subprocess.run([*base, *extra], cwd=project, env=full, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return next(line for line in out.stdout.splitlines() if line.startswith("DEVICES=")).split("=", 1)[1]

    assert devices() == "None"
    assert devices("--resources", "gpu=3") == "0,1,2"
    assert devices("--resources", "gpu=2", CUDA_VISIBLE_DEVICES="5,7") == "5,7"
