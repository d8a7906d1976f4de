"""Resumable training state: a killed train stage restarts from its last checkpoint.

A checkpoint holds what resuming needs and nothing else: the trainable weights (safetensors),
the optimizer and schedule state and the RNG states (a torch file read back with
weights_only=True), counters and the curve (JSON), and the best validation weights only when
they are not the current ones. Most evaluations improve on the last, so a full fine-tuning
checkpoint is usually the weights and optimizer state once, not twice; when the best weights
are older, their file is hard-linked from the previous checkpoint instead of written again.
Frozen backbone weights are never saved: the backbone directory holds them. The checkpoint
records a fingerprint of the run's settings and is ignored when they changed.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cfqa.io.atomic_io import atomic_dir, read_json, remove_debris, write_json
from cfqa.io.logs import get_logger
from cfqa.methods.base import load_trainable, save_trainable, trainable_state_dict

log = get_logger(__name__)

STATE = "state.json"
WEIGHTS = "trainable.safetensors"
BEST = "best.safetensors"          # present only while the best weights are not the current ones
EXTRA = "optimizer.pt"


@dataclass
class TrainingState:
    step: int = 0
    best_step: int = 0
    best_val_loss: float = float("inf")
    bad_evaluations: int = 0
    curve: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)   # per optimizer step, for speed figures
    stopped_early: bool = False


def _rng_states() -> dict:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()   # dropout on the GPU draws from these
    return states


def _restore_rng(states: dict | torch.Tensor) -> None:
    if isinstance(states, torch.Tensor):       # a checkpoint written before the CUDA states were kept
        states = {"cpu": states}
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(directory: Path, model, optimizer, schedule, state: TrainingState,
                    best_weights: dict[str, torch.Tensor], fingerprint: str) -> None:
    best_is_current = state.best_step == state.step
    previous = read_json(directory / STATE) if (directory / STATE).is_file() else {}
    with atomic_dir(directory) as tmp:
        save_trainable(model, tmp / WEIGHTS)
        if not best_is_current:
            kept = directory / BEST
            if kept.is_file() and previous.get("best_step") == state.best_step:
                os.link(kept, tmp / BEST)     # the same best weights as the last checkpoint's
            else:
                save_file({k: v.to("cpu").contiguous() for k, v in best_weights.items()}, str(tmp / BEST))
        # An open file, not a path: torch's C++ writer drops the errno (a full disk would read
        # "unexpected pos 64 vs 0"); Python's file raises the OSError that names the cause.
        with open(tmp / EXTRA, "wb") as handle:
            torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                        "rng": _rng_states()}, handle)
        write_json(tmp / STATE, {"fingerprint": fingerprint, **state.__dict__})


def load_checkpoint(directory: Path, model, optimizer, schedule, fingerprint: str) -> tuple[TrainingState, dict] | None:
    """The saved state and the best weights (on the CPU), or None if there is no checkpoint
    for these settings. Removes the temporary directory of a save that was killed (the run's
    output lock makes this run its only writer; of a data-parallel run's processes, rank 0,
    which alone saves checkpoints)."""
    removed = remove_debris(directory) if os.environ.get("RANK", "0") == "0" else []
    if removed:
        log.info("removed an unfinished checkpoint save: %s", ", ".join(map(str, removed)))
    if not (directory / STATE).is_file():
        return None
    saved = read_json(directory / STATE)
    if saved.pop("fingerprint") != fingerprint:
        return None
    load_trainable(model, directory / WEIGHTS)
    extra = torch.load(directory / EXTRA, weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    schedule.load_state_dict(extra["schedule"])
    _restore_rng(extra["rng"])
    state = TrainingState(**saved)
    if "best" in extra:                        # a checkpoint written before best weights had their file
        best = extra["best"]
    elif state.best_step == state.step:
        best = {k: v.to("cpu", copy=True) for k, v in trainable_state_dict(model).items()}
    else:
        best = load_file(str(directory / BEST))
    return state, best


def checkpoint_bytes(directory: Path) -> int:
    """Bytes on disk of the checkpoint's files (a hard-linked file counts once)."""
    inodes = {}
    for path in directory.iterdir():
        status = path.stat()
        inodes[(status.st_dev, status.st_ino)] = status.st_size
    return sum(inodes.values())


def remove_checkpoint(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
