"""The SLURM and Kubernetes profiles dry-run the whole DAG with their real executor plugins
(`make install` brings them), partitions unset, in a copy of the project: the plugins accept
every option the profiles set, and the resources reach the jobs."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cfqa.config import load
from cfqa.dag import stage
from pipeline_support import tool_env
from project_copy import copy_project

BUCKET = "cfqa-dry-run"


def needs(*modules: str):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed: `make install`")


def job_counts(dry_run_output: str) -> dict[str, int]:
    """rule -> job count from the `Job stats:` table of a dry run."""
    table = dry_run_output.split("Job stats:", 1)[1]
    return {rule: int(count) for rule, count in re.findall(r"(?m)^(\w+)\s+(\d+)$", table)}


def expected_jobs(project: Path) -> int:
    cfg = load([project / "params.yaml"])
    return len(cfg.methods) * len(cfg.seeds)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project on two methods and two seeds: every rule and the per-method and
    per-seed jobs, each asked of the bucket once, without the default's 9 × 3."""
    root = copy_project(tmp_path / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["methods"] = {name: params["methods"][name] for name in ("full", "lora")}
    params["seeds"] = [0, 1]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@pytest.fixture
def apptainer_on_path(tmp_path: Path) -> dict[str, str]:
    """The SLURM profile deploys with apptainer, which Snakemake looks for before it builds the
    DAG. A dry run starts no container, so where apptainer is absent a stand-in that answers
    `apptainer --version` is enough."""
    if shutil.which("apptainer"):
        return tool_env()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "apptainer"
    stub.write_text("#!/bin/sh\necho 'apptainer version 1.4.0'\n")
    stub.chmod(0o755)
    env = tool_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


@pytest.mark.slow
@needs("snakemake_executor_plugin_slurm")
def test_slurm_profile_dry_runs_with_its_placeholders(project, apptainer_on_path):
    result = subprocess.run(["snakemake", "--dry-run", "--profile", "workflow/profiles/slurm"], cwd=project,
                            env=apptainer_on_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    counts = job_counts(result.stdout)
    assert counts["train"] == counts["evaluate"] == expected_jobs(project)
    train = re.search(r"(?m)^rule train:\n(?:    .*\n)*?    resources: (.*)$", result.stdout)[1]
    runtime = stage("train").needs.resources("embedded").runtime_min
    assert "slurm_partition=${CFQA_SLURM_GPU_PARTITION}" in train and "gpu=1" in train and f"runtime={runtime}" in train


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_server():
    """A local S3 (moto's server) with an empty bucket: the storage plugin asks the bucket what
    exists even in a dry run."""
    import boto3

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    try:
        for _ in range(120):
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # not listening yet
                if server.poll() is not None:
                    raise
                time.sleep(0.25)
        else:
            pytest.fail(f"moto's S3 server did not answer on {url}")
        yield url, client
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@needs("snakemake_executor_plugin_kubernetes", "snakemake_storage_plugin_s3", "moto", "flask_cors")
def test_kubernetes_profile_dry_runs_against_its_bucket(project, s3_server):
    url, client = s3_server
    env = tool_env(CFQA_S3_BUCKET=BUCKET, SNAKEMAKE_STORAGE_S3_ACCESS_KEY="test",
                   SNAKEMAKE_STORAGE_S3_SECRET_KEY="test")
    args = ["snakemake", "--dry-run", "--profile", "workflow/profiles/kubernetes", "--storage-s3-endpoint-url", url]

    # Every input lives in the bucket: without params.yaml there, the first job has no input.
    missing = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert missing.returncode != 0
    assert f"s3://{BUCKET}/cfqa/params.yaml" in missing.stdout + missing.stderr

    client.upload_file(str(project / "params.yaml"), BUCKET, "cfqa/params.yaml")
    result = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    counts = job_counts(result.stdout)
    assert counts["train"] == counts["evaluate"] == expected_jobs(project)
    assert f"s3://{BUCKET}/cfqa/results/" in result.stdout
