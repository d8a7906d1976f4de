"""What one training step costs in memory, split the way methods differ: parameters, gradients,
optimizer state, and activations saved for backward.

Whole-process RSS is not the measure of a step on CPU (torch + transformers alone hold
~370 MB before any model exists): the saved activations are summed exactly with
`torch.autograd.graph.saved_tensors_hooks`, each storage counted once (views of one storage,
and tensors saved by several ops, are one allocation). Storages that belong to parameters are
not activations (they are counted under parameters).

The sum of parts is not a peak: backward's transient buffers and the allocator's slack come
on top. `PeakMemory` measures the peak of a whole training run: on CPU the growth of the
process's peak RSS over its level when the run started (the kernel's high-water mark is
reset through /proc/self/clear_refs), on CUDA `torch.cuda.max_memory_allocated`.
"""
from __future__ import annotations

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


def _status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status (Linux) in bytes; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_rss_high_water_mark() -> bool:
    """Resets the kernel's peak-RSS mark to the current RSS (Linux 4.0+); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024   # Linux reports KiB


class PeakMemory:
    """Context manager: the peak memory of what runs inside it.

    CUDA: `torch.cuda.max_memory_allocated` (reset on entry): every tensor the allocator held
    at the peak, parameters included. CPU: peak RSS minus RSS on entry, i.e. what the run
    added at its worst moment. Without a resettable high-water mark (not Linux) the
    process-lifetime peak is used, which undercounts when an earlier phase peaked higher.
    """

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.peak_bytes: int | None = None
        self.measure = ""

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.measure = "torch.cuda.max_memory_allocated during training"
        else:
            self._resettable = _reset_rss_high_water_mark()
            self._start = _status_bytes("VmRSS") if self._resettable else _ru_maxrss_bytes()
            self.measure = ("growth of the process's peak RSS during training" if self._resettable else
                            "growth of the process's lifetime peak RSS during training (a lower bound)")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated()
            return
        peak = _status_bytes("VmHWM") if self._resettable else _ru_maxrss_bytes()
        if peak is not None and self._start is not None:
            self.peak_bytes = max(peak - self._start, 0)
