"""benchmarks/pipeline_stages.py reads Snakemake's own run log into per-stage job times."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LOG = """\
Building DAG of jobs...
Provided cores: 2
Select jobs to execute...
[Wed Nov 25 19:13:35 2026]
localrule download:
    output: data/raw
    log: logs/download.log
    jobid: 5
    reason: Missing output files: data/raw
[Wed Nov 25 19:13:36 2026]
Finished jobid: 5 (Rule: download)
[Wed Nov 25 19:13:36 2026]
rule train:
    input: data/variants
    output: models/full/seed0
    log: logs/train/full/seed0.log
    jobid: 12
    reason: Missing output files: models/full/seed0
    wildcards: method=full, seed=0
    resources: tmpdir=/tmp
[Wed Nov 25 19:13:40 2026]
rule train:
    output: models/lora/seed0
    wildcards: method=lora, seed=0
    jobid: 13
[Wed Nov 25 19:15:36 2026]
Finished jobid: 12 (Rule: train)
[Wed Nov  5 19:16:00 2026]
Finished jobid: 13 (Rule: train)
"""


@pytest.fixture(scope="module")
def pipeline_stages():
    spec = importlib.util.spec_from_file_location("pipeline_stages", ROOT / "benchmarks" / "pipeline_stages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jobs_and_stage_sums_from_a_snakemake_log(pipeline_stages, tmp_path):
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG.replace("Nov  5", "Nov 25"))
    jobs, cores = pipeline_stages.parse_log(log)
    assert cores == 2
    assert [(j["rule"], j["wildcards"]) for j in jobs] == [
        ("download", ""), ("train", "method=full, seed=0"), ("train", "method=lora, seed=0")]
    summary = pipeline_stages.summarize(jobs, cores, {"train": 250.5})
    assert summary["pipeline_wall_s"] == 145.0            # 19:13:35 -> 19:16:00
    assert summary["stages"]["train"] == {"jobs": 2, "job_seconds_sum_s": 120.0 + 140.0, "job_seconds_mean_s": 130.0,
                                          "job_seconds_max_s": 140.0, "cpu_time_sum_s": 250.5}
    assert summary["stages"]["download"]["cpu_time_sum_s"] is None
    assert list(summary["stages"]) == ["train", "download"]   # the costliest stage first
    assert summary["cores_busy_share"] == round(261 / (145 * 2), 3)


def test_a_finish_without_a_start_names_the_line(pipeline_stages, tmp_path):
    log = tmp_path / "bad.snakemake.log"
    log.write_text("[Wed Nov 25 19:13:36 2026]\nFinished jobid: 9 (Rule: train)\n")
    with pytest.raises(ValueError, match=r"bad\.snakemake\.log:2: job 9 finishes but never started"):
        pipeline_stages.parse_log(log)
