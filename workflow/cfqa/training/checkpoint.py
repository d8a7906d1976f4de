"""Resumable training state: a killed train stage restarts from its last checkpoint.

Trainable weights go to safetensors; optimizer and schedule state to torch files read back
with weights_only=True; counters and the curve to JSON. The checkpoint records a fingerprint
of the run's settings and is ignored when they changed.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cfqa.atomic_io import atomic_dir, read_json, remove_debris, write_json
from cfqa.logs import get_logger
from cfqa.methods.base import load_trainable, save_trainable

log = get_logger(__name__)

STATE = "state.json"


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


def save_checkpoint(directory: Path, model, optimizer, schedule, state: TrainingState,
                    best_weights: dict[str, torch.Tensor], fingerprint: str) -> None:
    with atomic_dir(directory) as tmp:
        save_trainable(model, tmp / "trainable.safetensors")
        # An open file, not a path: torch's C++ writer drops the errno (a full disk would read
        # "unexpected pos 64 vs 0"); Python's file raises the OSError that names the cause.
        with open(tmp / "optimizer.pt", "wb") as handle:
            torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                        "best": best_weights, "rng": torch.get_rng_state()}, handle)
        write_json(tmp / STATE, {"fingerprint": fingerprint, **state.__dict__})


def load_checkpoint(directory: Path, model, optimizer, schedule, fingerprint: str) -> tuple[TrainingState, dict] | None:
    """The saved state, or None if there is no checkpoint for these settings. Removes the
    temporary directory of a save that was killed (the run's output lock makes this run its
    only writer; of a data-parallel run's processes, rank 0, which alone saves checkpoints)."""
    removed = remove_debris(directory) if os.environ.get("RANK", "0") == "0" else []
    if removed:
        log.info("removed an unfinished checkpoint save: %s", ", ".join(map(str, removed)))
    if not (directory / STATE).is_file():
        return None
    saved = read_json(directory / STATE)
    if saved.pop("fingerprint") != fingerprint:
        return None
    load_trainable(model, directory / "trainable.safetensors")
    extra = torch.load(directory / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    schedule.load_state_dict(extra["schedule"])
    torch.set_rng_state(extra["rng"])
    return TrainingState(**saved), extra["best"]


def remove_checkpoint(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
