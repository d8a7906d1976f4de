"""What one training step costs in memory, split the way methods differ: parameters, gradients,
optimizer state, and activations saved for backward.

Whole-process RSS is not the measure on CPU (torch + transformers alone hold ~370 MB, see
PITFALLS.md "Measuring memory on CPU"): the saved activations are summed exactly with
`torch.autograd.graph.saved_tensors_hooks`, each storage counted once (views of one storage,
and tensors saved by several ops, are one allocation). Storages that belong to parameters are
not activations (they are counted under parameters). On CUDA the allocator's peak for the step
(`torch.cuda.max_memory_allocated`) is recorded as well.
"""
from __future__ import annotations

import os
import resource
import sys
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import torch
from torch import nn


def storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def unique_storage_bytes(tensors: Iterable[torch.Tensor], exclude: set[tuple[str, int]] = frozenset()) -> int:
    """Bytes of the distinct storages behind `tensors` (a storage shared by views counts once)."""
    seen: dict[tuple[str, int], int] = {}
    for tensor in tensors:
        key = storage_key(tensor)
        if key not in exclude:
            seen[key] = tensor.untyped_storage().nbytes()
    return sum(seen.values())


class SavedActivations:
    """Context manager: the tensors autograd saves for backward while it is active.

    Keeps only storage keys and sizes. A saved tensor stays alive until backward, so its
    address cannot be reused by another saved tensor in the meantime.
    """

    def __init__(self, exclude: set[tuple[str, int]] = frozenset()):
        self.exclude = set(exclude)
        self.storages: dict[tuple[str, int], int] = {}
        self.count = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda saved: saved)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.count += 1
        key = storage_key(tensor)
        if key not in self.exclude:
            self.storages[key] = tensor.untyped_storage().nbytes()
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())

    def __enter__(self) -> "SavedActivations":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)


def parameter_storage_keys(model: nn.Module) -> set[tuple[str, int]]:
    return {storage_key(p) for p in model.parameters()}


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [value for state in optimizer.state.values() for value in state.values()
            if isinstance(value, torch.Tensor)]


@dataclass(frozen=True)
class StepMemory:
    """Bytes held during one training step, by kind. `total_bytes` is their sum: the memory a
    method needs beyond the runtime itself (the peak also holds transient buffers of backward,
    which `cuda_peak_allocated_bytes` captures on CUDA)."""

    parameter_bytes: int            # every parameter, frozen or not
    trainable_parameter_bytes: int
    gradient_bytes: int             # .grad of the trainable parameters after backward
    optimizer_state_bytes: int      # e.g. Adam's two moments and step counters, after the step
    activation_bytes: int           # saved for backward, parameters excluded
    saved_tensor_count: int         # how many times autograd saved a tensor (before dedup)
    loss: float
    cuda_peak_allocated_bytes: int | None = None

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_state_bytes + self.activation_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes}


def training_step_memory(model: nn.Module, batch: Mapping[str, torch.Tensor],
                         optimizer: torch.optim.Optimizer) -> StepMemory:
    """Runs one full training step (forward with `model(**batch).loss`, backward, optimizer
    step, gradients cleared) and reports its memory. The optimizer state is measured after
    the step, since optimizers such as Adam create it lazily on the first step. Under
    activation checkpointing the activations recomputed in backward are not counted: they are
    not held between forward and backward."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    on_cuda = torch.cuda.is_available() and any(p.is_cuda for p in model.parameters())
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    parameters = list(model.parameters())
    with SavedActivations(exclude=parameter_storage_keys(model)) as saved:
        loss = model(**batch).loss
    loss.backward()
    gradient_bytes = unique_storage_bytes(p.grad for p in parameters if p.grad is not None)
    optimizer.step()
    cuda_peak = None
    if on_cuda:
        torch.cuda.synchronize()
        cuda_peak = torch.cuda.max_memory_allocated()
    memory = StepMemory(
        parameter_bytes=unique_storage_bytes(parameters),
        trainable_parameter_bytes=unique_storage_bytes(p for p in parameters if p.requires_grad),
        gradient_bytes=gradient_bytes,
        optimizer_state_bytes=unique_storage_bytes(optimizer_state_tensors(optimizer)),
        activation_bytes=saved.bytes,
        saved_tensor_count=saved.count,
        loss=float(loss.detach()),
        cuda_peak_allocated_bytes=cuda_peak,
    )
    optimizer.zero_grad(set_to_none=True)
    return memory


def current_rss_bytes() -> int | None:
    """The process's resident set size now (Linux: /proc/self/statm), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (whole process: compare against a baseline
    taken before training, never across processes). The kernel updates its high-water mark
    lazily, so the current size is folded in."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak if sys.platform == "darwin" else peak * 1024   # Linux reports KiB
    return max(peak, current_rss_bytes() or 0)
