"""The whole DAG, end to end, on a tiny configuration in a temporary copy of the project:
Snakemake runs every stage, a second run has nothing to do, MLflow holds one run per method,
and after `dvc commit` a LoRA hyper-parameter change reruns only LoRA's stages and the report."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cfqa.config import deep_merge
from pipeline_support import PROJECT, run_tool

pytestmark = pytest.mark.slow


def project_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=PROJECT, capture_output=True, text=True, check=True).stdout.split("\n")
    return [name for name in listed if name and (PROJECT / name).is_file()]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cfqa")
    for name in project_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, root / name)
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    tiny = yaml.safe_load((PROJECT / "tests/fixtures/params-tiny.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, tiny), sort_keys=False))
    git = ["git", "-c", "user.email=ci@cfqa", "-c", "user.name=ci"]
    run_tool(["git", "init", "-q"], root)
    run_tool(git + ["add", "-A"], root)
    run_tool(git + ["commit", "-qm", "smoke"], root)
    run_tool(["snakemake", "--cores", "2"], root, timeout=1200)
    return root


def test_report_and_summary_cover_every_method(pipeline):
    methods = list(yaml.safe_load((pipeline / "params.yaml").read_text())["methods"])
    summary = json.loads((pipeline / "results/summary.json").read_text())
    assert set(summary["methods"]) == set(methods)
    report = (pipeline / "reports/report.md").read_text()
    html = (pipeline / "reports/index.html").read_text()
    for method in methods:
        assert f"| {method} " in report
        assert method in html
        metrics = json.loads((pipeline / f"results/{method}/metrics.json").read_text())
        assert set(metrics["sets"]) == {"test", "seen"}
        assert set(metrics["sets"]["test"]) == {"factual", "counterfactual", "empty", "random"}
        assert (pipeline / f"models/{method}/trainable.safetensors").stat().st_size > 0
    assert "<script src=" not in html


def test_mlflow_has_one_run_per_method(pipeline):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cfqa-smoke")
    runs = client.search_runs([experiment.experiment_id])
    methods = set(yaml.safe_load((pipeline / "params.yaml").read_text())["methods"])
    assert {run.data.tags["method"] for run in runs} == methods
    run = runs[0]
    assert "sets.test.factual.contextual_em_pct" in run.data.metrics
    assert run.data.tags["git_commit"] != "unknown"


def test_second_run_has_nothing_to_do(pipeline):
    result = run_tool(["snakemake", "--cores", "2", "--dry-run"], pipeline)
    assert "Nothing to be done" in result.stdout + result.stderr


def test_lora_change_reruns_only_lora_and_report(pipeline):
    run_tool(["dvc", "commit", "--force", "--quiet"], pipeline, timeout=300)
    assert json.loads(run_tool(["dvc", "status", "--json"], pipeline).stdout or "{}") == {}
    params_path = pipeline / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["methods"]["lora"]["options"]["r"] = params["methods"]["lora"]["options"]["r"] * 2
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = json.loads(run_tool(["dvc", "status", "--json"], pipeline).stdout)
        assert set(changed) == {"train@lora", "evaluate@lora", "report"}
        dry = run_tool(["snakemake", "--cores", "2", "--dry-run"], pipeline).stdout
        jobs = {line.split()[0] for line in dry.split("Job stats:")[1].split("total")[0].splitlines()[3:] if line.strip()}
        assert jobs == {"train", "evaluate", "report", "all"}
        assert "wildcards: method=lora" in dry and "wildcards: method=full" not in dry
    finally:
        params_path.write_text(original)
