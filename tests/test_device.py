"""No silent CPU: a run set to `train.device: cuda` that finds no usable CUDA stops before it
reads anything, with one line naming the run, what it expected and what it found; `auto` takes
the CPU here, and `cpu` always. This machine has a CPU-only torch; the other findings (no
visible device, a driver too old for the build) are what torch itself reports, fed in."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import cfqa.model.device as device
from cfqa.config import PROJECT_ROOT, deep_merge, load
from cfqa.model.device import CudaUnavailable, cuda_problem, resolve, torch_build
from cfqa.training.loop import make_accelerator
from pipeline_support import tool_env


def test_this_torch_is_told_a_cpu_build_without_importing_it():
    version, cuda = torch_build()
    assert (version, cuda) == (torch.__version__, torch.version.cuda)
    assert cuda is None       # this machine's lock pins the CPU build
    assert cuda_problem() == f"torch {torch.__version__} is a CPU-only build (no CUDA)"


def test_cuda_build_without_visible_device(monkeypatch):
    monkeypatch.setattr(device, "torch_build", lambda: ("2.13.0+cu130", "13.0"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cuda_problem() == "no visible device (CUDA_VISIBLE_DEVICES='')"


def test_cuda_build_with_a_driver_too_old_names_both(monkeypatch):
    """torch.cuda.init() raises the driver's reason; the line keeps its first sentence and adds
    the CUDA version torch was built for."""
    monkeypatch.setattr(device, "torch_build", lambda: ("2.13.0+cu130", "13.0"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")

    def too_old():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 12040). Please update "
                           "your GPU driver by downloading and installing a new version from the URL: ...")

    monkeypatch.setattr(torch.cuda, "init", too_old)
    assert cuda_problem() == ("torch 2.13.0+cu130 (built for CUDA 13.0, CUDA_VISIBLE_DEVICES='0') cannot use CUDA: "
                              "The NVIDIA driver on your system is too old (found version 12040)")


def test_cuda_build_with_a_working_device_has_no_problem(monkeypatch):
    monkeypatch.setattr(device, "torch_build", lambda: ("2.13.0+cu130", "13.0"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cuda_problem() is None
    assert resolve("cuda") == "cuda"


def test_settings_resolve_here():
    assert resolve("auto") == "cpu" and resolve("cpu") == "cpu"
    with pytest.raises(CudaUnavailable, match=r"^method 'lora' seed 1: train\.device is cuda but found no usable "
                                              r"CUDA device: torch \S+ is a CPU-only build"):
        resolve("cuda", "method 'lora' seed 1")


def test_the_training_loop_never_falls_back_to_the_cpu():
    """make_accelerator (tune, train and evaluate's losses) follows train.device."""
    shared = load([PROJECT_ROOT / "params.yaml"]).train
    assert make_accelerator(dataclasses.replace(shared, device="cpu")).device.type == "cpu"
    assert make_accelerator(dataclasses.replace(shared, device="auto")).device.type == "cpu"
    with pytest.raises(CudaUnavailable, match="CPU-only build"):
        make_accelerator(dataclasses.replace(shared, device="cuda"))


def cuda_params(tmp_path: Path) -> Path:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params = deep_merge(params, {"train": {"device": "cuda"}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.parametrize("stage, run, named", [
    ("train", ["--method", "lora", "--seed", "2", "--out", "m", "--results", "r"], "method 'lora' seed 2"),
    ("tune", ["--method", "full", "--out", "s.json"], "method 'full' seed 0"),        # tune.seed
    ("evaluate", ["--method", "ia3", "--seed", "1", "--model", "m", "--results", "r"], "method 'ia3' seed 1"),
])
def test_cli_stops_a_cuda_run_before_reading_anything(tmp_path, stage, run, named):
    """Inputs that do not exist: the device line comes first, so nothing was read; one line on
    stderr, exit 2, no log of work done."""
    args = [sys.executable, "-m", "cfqa.cli", "--log-file", str(tmp_path / "stage.log"), stage,
            "--params", str(cuda_params(tmp_path)), "--variants", "absent", "--models", "absent", *run]
    started = time.perf_counter()
    result = subprocess.run(args, cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert f"cfqa {stage}: {named}: train.device is cuda but found no usable CUDA device: torch " in lines[0]
    assert "CPU-only build" in lines[0] and "set train.device: auto or cpu" in lines[0]
    assert "input directory not found" not in result.stderr
    assert not any(tmp_path.glob("m*")) and not (tmp_path / "r").exists()
    print(f"cfqa {stage} with train.device cuda stopped after {seconds:.2f} s (process start to exit)")
