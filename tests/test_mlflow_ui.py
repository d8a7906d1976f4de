"""The MLflow UI on the runs the pipeline logs: `mlflow server` on a free loopback port, on the
store the real train and evaluate stages wrote (tests/stage_results.py), read through its REST
API as the UI reads it and opened in headless Chromium on the link `make ui` prints (runs
grouped by configuration, headline metrics as columns; a screenshot), then stopped by its PID
with no process left behind."""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

import chromium
from cfqa.contract import read_headline, read_metrics, read_train_record
from cfqa.tracking import view as tracking_view

EXPERIMENT = "cfqa-stage-results"      # tests/stage_results.py tiny_params
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(server: subprocess.Popen) -> list[psutil.Process]:
    """SIGTERM to the server's PID (its workers stop with it); returns any process left."""
    family = [psutil.Process(server.pid)]
    with contextlib.suppress(psutil.NoSuchProcess):
        family += family[0].children(recursive=True)
    server.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=30)
    _, alive = psutil.wait_procs(family, timeout=30)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def ui(stage_results, tmp_path_factory):
    """The base URL of `mlflow server` on the stage results' store and artifacts."""
    root = stage_results.root
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "server.log"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "mlartifacts")]
    with open(log, "wb") as output:
        # Without GenAI job execution: it would start seven huey consumers besides the UI.
        server = subprocess.Popen(command, cwd=root, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                                       "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"mlflow server exited {server.returncode}: {log.read_text()[-3000:]}"
            with contextlib.suppress(requests.RequestException):     # not listening, or still starting
                if requests.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"mlflow server not up: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield base
    finally:
        left = stop(server)
        for process in left:                       # only this server's own processes, by PID
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        assert not left, f"processes left after stopping mlflow server: {[p.pid for p in left]}"


def _runs(ui: str, experiment_id: str) -> dict[str, dict]:
    response = requests.post(f"{ui}/api/2.0/mlflow/runs/search", timeout=30,
                             json={"experiment_ids": [experiment_id], "max_results": 1000})
    response.raise_for_status()
    return {run["info"]["run_name"]: run for run in response.json().get("runs", [])}


def _values(entries: list[dict]) -> dict[str, object]:
    return {entry["key"]: entry["value"] for entry in entries}


def test_the_ui_serves_the_pipeline_runs_with_their_metrics_and_artifacts(ui, stage_results):
    assert "<html" in requests.get(ui, timeout=30).text.lower()
    response = requests.get(f"{ui}/api/2.0/mlflow/experiments/get-by-name", timeout=30,
                            params={"experiment_name": EXPERIMENT})
    response.raise_for_status()
    experiment = response.json()["experiment"]
    assert _values(experiment["tags"])["mlflow.experimentKind"] == "custom_model_development"
    runs = _runs(ui, experiment["experiment_id"])
    expected = {f"{m}-seed{s}" for m in stage_results.methods for s in stage_results.seeds}
    assert expected <= set(runs) and len(expected) >= 2
    assert {name for name in runs if name.startswith("pipeline-")} and set(runs) - expected <= {
        name for name in runs if name.startswith("pipeline-")}

    full, lora = runs["full-seed0"], runs["lora-seed0"]
    for run, method in ((full, "full"), (lora, "lora")):
        results = stage_results.run_dir(method, 0)
        metrics = read_metrics(results / "metrics.json")
        logged = _values(run["data"]["metrics"])
        assert run["info"]["status"] == "FINISHED"
        assert (logged["sets.test.factual.contextual_em_pct"]
                == metrics.sets["test"]["factual"]["contextual_em_pct"])
        assert logged["train.params.trainable"] == read_train_record(results / "train.json").params.trainable
        tags = _values(run["data"]["tags"])
        assert tags["mlflow.source.name"] == "cfqa train" and tags["method"] == method

        listing = requests.get(f"{ui}/api/2.0/mlflow/artifacts/list", timeout=30,
                               params={"run_id": run["info"]["run_id"]})
        listing.raise_for_status()
        assert {"train.json", "metrics.json", "train_curve.csv"} <= {f["path"] for f in listing.json()["files"]}
        served = requests.get(f"{ui}/get-artifact", timeout=30,
                              params={"run_uuid": run["info"]["run_id"], "path": "metrics.json"})
        assert served.status_code == 200 and served.content == (results / "metrics.json").read_bytes()
    # Compared side by side as the runs table does: full fine-tuning trains every parameter.
    assert (_values(full["data"]["metrics"])["train.params.trainable"]
            > _values(lora["data"]["metrics"])["train.params.trainable"])
    assert _values(full["data"]["params"])["registry_method"] == "full"


def test_the_printed_link_opens_the_runs_grouped_by_configuration_with_headline_columns(ui, stage_results,
                                                                                      tmp_path_factory):
    """What `make ui` prints (cfqa.tracking.view), in Chromium: one group per configuration
    (method and config hash, its seeds inside), the headline metrics as columns, the primary
    endpoint first; every run holds them under the names the view asks for."""
    response = requests.get(f"{ui}/api/2.0/mlflow/experiments/get-by-name", timeout=30,
                            params={"experiment_name": EXPERIMENT})
    experiment_id = response.json()["experiment"]["experiment_id"]
    runs = _runs(ui, experiment_id)
    hashes = {}
    for method in stage_results.methods:
        seeds = [runs[f"{method}-seed{seed}"] for seed in stage_results.seeds]
        (hashes[method],) = {_values(run["data"]["tags"])["config_hash"] for run in seeds}   # seeds share it
        for seed, run in zip(stage_results.seeds, seeds):
            metrics = _values(run["data"]["metrics"])
            headline = read_headline(stage_results.run_dir(method, seed) / "headline.json")
            assert metrics["Headline/cf_em_pct"] == round(headline.test_contextual_em_pct["counterfactual"], 2)
            assert metrics["Headline/trainable_params"] == headline.trainable_params
            assert metrics["train.lr_selected_flag"] == 1.0 and "train.lr_selected" not in metrics
            # The duration is training plus evaluation; the wait between the jobs is apart.
            duration_s = (int(run["info"]["end_time"]) - int(run["info"]["start_time"])) / 1000
            assert duration_s == pytest.approx(metrics["time/train_s"] + metrics["time/evaluate_s"], abs=0.002)
            assert metrics["time/queue_wait_s"] >= 0

    url = tracking_view.runs_url(ui, experiment_id)
    assert url.endswith(f"/#/experiments/{experiment_id}/runs?viewStateShareKey=cfqa-runs"
                        "&workflowType=machine_learning")
    root = tmp_path_factory.mktemp("mlflow-ui-browser")
    window = (1920, 1000)
    dom = chromium.run(url, root / "profile", window=window, wait_ms=20000, args=("--dump-dom",)).stdout
    for method, config_hash in hashes.items():
        assert f"Group: method: {method}, config_hash: {config_hash}" in dom, f"no group row of {method}"
    for column in ("Headline/cf_em_pct", "Headline/f_em_pct", "seed", "config_hash"):
        assert re.search(rf'col-id="(metrics|tags)\.`{re.escape(column)}`"', dom), f"no column {column}"
    assert 'aria-label="Sort: Headline/cf_em_pct"' in dom

    screenshot = root / "mlflow_runs_view.png"
    chromium.run(url, root / "profile-shot", window=window, wait_ms=20000, args=(f"--screenshot={screenshot}",))
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == window
        colours = image.convert("RGB").resize((192, 100)).getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50, "the screenshot is blank"
    print(f"screenshot of the runs view: {screenshot}")
