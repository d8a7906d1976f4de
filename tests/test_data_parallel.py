"""Data parallelism through accelerate, as the train rule starts it on N GPUs (cfqa.launch
--gpus N --data-parallel: `accelerate launch`), here as 2 CPU processes over gloo: the same
loss curve as one process with the same global batch (2 micro-batches accumulated), rank 0
alone writing the run's files, its log and its MLflow run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cfqa.config import deep_merge
from cfqa.contract import read_curve, read_train_record
from cfqa.dag import code_hash
from pipeline_support import PROJECT, tool_env

pytestmark = pytest.mark.slow
STEPS = 30
BATCH = 8


def train_run(stage_results, root: Path, processes: int) -> subprocess.CompletedProcess:
    """`cfqa train` of `full`, seed 0, on the shared stage results' data and backbone: `processes`
    processes of batch BATCH each, accumulating 2 // processes micro-batches a step."""
    params = yaml.safe_load(stage_results.params.read_text())
    params["methods"] = {"full": params["methods"]["full"]}
    params = deep_merge(params, {
        "train": {"device": "cpu", "batch_size": BATCH, "grad_accum_steps": 2 // processes, "max_steps": STEPS,
                  "eval_every": 10, "early_stopping_patience": 0, "warmup_steps": 2},
        "methods": {"full": {"train": {"lr": 0.003}}},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "data-parallel"},
    })
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    command = ["cfqa", "--log-file", str(root / "train.log"), "train", "--params", str(root / "params.yaml"),
               "--method", "full", "--seed", "0", "--variants", str(stage_results.variants),
               "--models", str(stage_results.models), "--out", str(root / "model"), "--results", str(root / "results")]
    if processes > 1:   # as the train rule's shell starts it with `gpu: 2`
        command = [sys.executable, "-m", "cfqa.launch", "--stage", "train", "--code", code_hash("train", PROJECT),
                   "--gpus", str(processes), "--data-parallel", "--", *command]
    env = tool_env(OMP_NUM_THREADS="1")
    env.pop("CFQA_GPU_DEVICES", None)
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def runs(stage_results, tmp_path_factory):
    base = tmp_path_factory.mktemp("data-parallel")
    one, two = train_run(stage_results, base / "one", 1), train_run(stage_results, base / "two", 2)
    assert one.returncode == 0, one.stderr[-4000:]
    assert two.returncode == 0, two.stderr[-4000:]
    return base / "one", base / "two", two


def test_two_processes_follow_one_process_loss_curve(runs):
    one, two, _ = runs
    curve_one, curve_two = read_curve(one / "results/train_curve.csv"), read_curve(two / "results/train_curve.csv")
    assert [row.step for row in curve_one] == [row.step for row in curve_two] == [10, 20, 30]
    print("step | train loss 1 process | 2 processes | validation loss 1 process | 2 processes")
    for a, b in zip(curve_one, curve_two):
        print(f"{a.step} | {a.train_loss:.6f} | {b.train_loss:.6f} | {a.val_loss:.6f} | {b.val_loss:.6f}")
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4)
        assert b.val_loss == pytest.approx(a.val_loss, rel=1e-4)
    assert curve_one[-1].train_loss < curve_one[0].train_loss      # it learned: the comparison means something
    weights_one, weights_two = load_file(one / "model/trainable.safetensors"), load_file(two / "model/trainable.safetensors")
    assert weights_one.keys() == weights_two.keys()
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-3, atol=1e-5)


def test_rank_zero_alone_writes_the_run(runs):
    one, two, result = runs
    assert read_train_record(one / "results/train.json").cost.processes == 1
    record = read_train_record(two / "results/train.json")
    assert record.cost.processes == 2 and record.steps == STEPS
    # One log (rank 0's: "read ... examples" once), the other rank quiet at INFO.
    assert (two / "train.log").read_text().count(" training and ") == 1
    assert "is locked" not in result.stderr
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{two / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("data-parallel")
    names = [run.info.run_name for run in client.search_runs([experiment.experiment_id])]
    assert names.count("full-seed0") == 1, names      # one run, not one per process
