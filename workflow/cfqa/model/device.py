"""The device tune, train and evaluate run their model on: params `train.device`.

`cuda` never falls back to the CPU: a job that finds no usable CUDA device stops before any
work with one line naming the job, what it expected and what it found (a CPU-only torch, no
visible device, a driver too old for the CUDA torch was built for). `auto` takes CUDA where
torch can use it, else the CPU (the embedded default); `cpu` is always the CPU.

A CPU-only torch is told from torch/version.py without importing torch, so a job in the
wrong image stops in a fraction of a second; every other check asks torch itself
(`torch.cuda.init()` raises with the driver's own reason).
"""
from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path
from cfqa.errors import BadInput

SETTINGS = ("cuda", "cpu", "auto")
# A value of CUDA_VISIBLE_DEVICES that hides every device.
_HIDES_ALL = ("", "-1")


class CudaUnavailable(BadInput, RuntimeError):
    """`train.device` is cuda and this process cannot use CUDA; the message says why."""


def torch_build() -> tuple[str, str | None]:
    """(torch's version, the CUDA version it was built for, None for a CPU-only build), read from
    torch/version.py: importing torch takes seconds, reading the file does not."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "not installed", None
    values: dict[str, object] = {}
    source = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and node.value is not None:
            try:
                values[target.id] = ast.literal_eval(node.value)
            except ValueError:
                continue      # computed values (e.g. TorchVersion(...)) are not needed
    version = str(values.get("__version__", "unknown"))
    cuda = values.get("cuda")
    return version, str(cuda) if cuda else None


def _first_sentence(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line.split(". ")[0].rstrip(".")


def cuda_problem() -> str | None:
    """Why this process cannot use CUDA, in words; None when it can."""
    version, cuda = torch_build()
    if cuda is None:
        return f"torch {version} is a CPU-only build (no CUDA)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in _HIDES_ALL:
        return f"no visible device (CUDA_VISIBLE_DEVICES={visible!r})"
    import torch

    shown = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    try:
        torch.cuda.init()      # raises with the driver's reason: none found, too old for this build ...
    except Exception as error:  # torch raises RuntimeError or AssertionError, with the reason as text
        return f"torch {version} (built for CUDA {cuda}{shown}) cannot use CUDA: {_first_sentence(str(error))}"
    if torch.cuda.device_count() == 0:
        return f"torch {version} (built for CUDA {cuda}{shown}) sees no CUDA device"
    return None


def require_cuda(job: str) -> None:
    """CudaUnavailable naming `job` (e.g. "train lora seed 0") unless CUDA is usable here."""
    problem = cuda_problem()
    if problem is not None:
        raise CudaUnavailable(f"{job}: train.device is cuda but found no usable CUDA device: {problem}; run it "
                              f"where a GPU is visible in the CUDA image (containers/Dockerfile, apptainer --nv), "
                              f"or set train.device: auto or cpu")


def resolve(setting: str, job: str = "this job") -> str:
    """"cuda" or "cpu" for a `train.device` setting; CudaUnavailable for cuda without CUDA."""
    if setting not in SETTINGS:
        raise ValueError(f"train.device must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if setting == "cpu":
        return "cpu"
    if setting == "cuda":
        require_cuda(job)
        return "cuda"
    if torch_build()[1] is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
