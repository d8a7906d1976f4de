"""The fine-tuning loop: bf16 autocast, gradient accumulation, clipping, validation-based
early stopping, resume from checkpoint; devices and multi-GPU through accelerate.

The host waits for the device only at logging points (every LOG_EVERY steps and at each
validation): each micro-step's loss stays on the device, summed into its step's loss, and
the window's losses are read, checked for NaN and timed together. A per-micro-step `.item()`
would make the CPU wait for every backward pass before it queues the next batch."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from torch import nn

from cfqa.config import TrainConfig
from cfqa.model.device import resolve
from cfqa.errors import BadInput
from cfqa.io.logs import get_logger
from cfqa.methods.base import trainable_state_dict
from cfqa.model.model_family import model_family
from cfqa.io.progress import progress
from cfqa.training.batches import (TokenizedExample, collate, fixed_sample, length_order, sequential_batches,
                                   training_batches)
from cfqa.training.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from cfqa.training.optimization import make_optimizer, make_schedule

log = get_logger(__name__)

LOG_EVERY = 10      # optimizer steps between curve points (and host syncs) outside validations


class TrainingOutOfMemory(BadInput, MemoryError):
    """A training or validation step did not fit in memory; the message names the knobs."""


def _out_of_memory(error: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), or the RuntimeError a failed CPU allocation raises."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text.lower()
                                                or "DefaultCPUAllocator: can't allocate" in text)


@dataclass(frozen=True)
class FineTuneResult:
    state: TrainingState
    stopped_early: bool
    step_time_s: float
    examples_per_s: float
    resumed_from_step: int
    epoch_times_s: tuple[float, ...] = ()   # each complete pass over the training examples (epoch_times)
    validation_examples: int = 0            # the sample validated every eval_every steps
    full_validation_loss: float | None = None   # the best weights on the whole validation set, at the end
    validation_seconds: float = 0.0         # time spent validating (sample and whole set)

    @property
    def max_epoch_time_s(self) -> float | None:
        return max(self.epoch_times_s) if self.epoch_times_s else None


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """On `cfg.device` (cfqa.model.device: cuda stops with CudaUnavailable where CUDA is unusable,
    never a silent CPU run). Under `accelerate launch` each process takes its own GPU, or on
    the CPU joins the others over gloo."""
    return Accelerator(mixed_precision="bf16" if cfg.bf16 else "no", cpu=resolve(cfg.device) == "cpu")


def epoch_times(step_seconds: Sequence[float], micro_steps_per_step: int, batches_per_epoch: int) -> tuple[float, ...]:
    """The training time of each complete epoch (one pass of the sampler over the examples):
    the sum of the times of the optimizer steps that start in it. An optimizer step consumes
    `micro_steps_per_step` consecutive sampler batches (gradient accumulation × processes), so
    a step that straddles an epoch boundary counts for the epoch it starts in. Computed after
    training from the per-step times the loop records anyway: the loop adds no work per step."""
    if micro_steps_per_step < 1 or batches_per_epoch < 1:
        raise ValueError(f"expected positive counts, got {micro_steps_per_step} micro-steps per step and "
                         f"{batches_per_epoch} batches per epoch")
    complete = len(step_seconds) * micro_steps_per_step // batches_per_epoch
    totals = [0.0] * complete
    for step, seconds in enumerate(step_seconds):
        epoch = step * micro_steps_per_step // batches_per_epoch
        if epoch < complete:
            totals[epoch] += seconds
    return tuple(totals)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on `device`; to a GPU from pinned memory without blocking, so the host can
    queue the next kernels while the copy runs."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def validation_loss(model: nn.Module, examples: Sequence[TokenizedExample], batch_size: int,
                    pad_id: int, accelerator: Accelerator) -> float:
    """Mean loss per target token over `examples`. Batches are cut from the examples sorted by
    length (little padding); the token-weighted mean does not depend on how they are cut."""
    model.eval()
    total, tokens = 0.0, 0
    family = model_family(accelerator.unwrap_model(model))
    ordered = [examples[i] for i in length_order(examples)]
    for chunk in sequential_batches(ordered, batch_size):
        batch = to_device(collate(chunk, pad_id, family), accelerator.device)
        with accelerator.autocast():
            loss = model(**batch).loss
        count = int((batch["labels"] != -100).sum())
        total += float(loss) * count
        tokens += count
    return total / max(tokens, 1)


def fine_tune(model: nn.Module, train: Sequence[TokenizedExample], validation: Sequence[TokenizedExample],
              cfg: TrainConfig, *, pad_id: int, checkpoint_dir: Path, fingerprint: str,
              accelerator: Accelerator, on_validation: Callable[[dict], None] | None = None,
              strata: Sequence[int] | None = None, stop_at: int | None = None) -> FineTuneResult:
    """Trains `model` (resuming from `checkpoint_dir`); running out of memory raises
    TrainingOutOfMemory naming the step and the settings that change a step's memory.
    Every `eval_every` steps the loss is measured on a fixed sample of `validation`
    (`train.validation_examples`, drawn with `train.validation_seed`), and at the end the
    best weights on the whole set. `strata` labels each training example with its variant
    (needed by `train.batching: stratified`). `on_validation` gets each curve point with a
    validation loss as it is measured (live tracking); the points between them are in the
    returned curve.

    `stop_at` pauses the run at that step of its schedule (the schedule is still the one of
    `cfg.max_steps`): it validates there and saves a checkpoint, which a later call with a
    larger `stop_at` (or none) resumes, and the model keeps its weights at that step. Only a
    run that is over (max_steps reached or stopped early) ends on its best validation weights."""
    progress_at = [0]
    try:
        return _fine_tune(model, train, validation, cfg, pad_id=pad_id, checkpoint_dir=checkpoint_dir,
                          fingerprint=fingerprint, accelerator=accelerator, progress_at=progress_at,
                          on_validation=on_validation, strata=strata, stop_at=stop_at)
    except (RuntimeError, MemoryError) as error:
        if isinstance(error, TrainingOutOfMemory) or not _out_of_memory(error):
            raise
        if accelerator.device.type == "cuda":
            torch.cuda.empty_cache()
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrainingOutOfMemory(f"out of memory after {progress_at[0]} of {cfg.max_steps} training steps on "
                                  f"{accelerator.device} ({first}); {cfg.memory_knobs()}") from error


def _fine_tune(model: nn.Module, train: Sequence[TokenizedExample], validation: Sequence[TokenizedExample],
               cfg: TrainConfig, *, pad_id: int, checkpoint_dir: Path, fingerprint: str,
               accelerator: Accelerator, progress_at: list[int],
               on_validation: Callable[[dict], None] | None = None,
               strata: Sequence[int] | None = None, stop_at: int | None = None) -> FineTuneResult:
    if cfg.gradient_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise ValueError("train.gradient_checkpointing is set but this method's model does not support it")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay)
    schedule = make_schedule(optimizer, cfg.warmup_steps, cfg.max_steps)
    resumed = load_checkpoint(checkpoint_dir, model, optimizer, schedule, fingerprint)
    if resumed:
        state, best_weights = resumed
        log.info("resuming from %s at step %d", checkpoint_dir, state.step)
    else:
        state, best_weights = TrainingState(), cpu_copy(trainable_state_dict(model))
    resumed_from = progress_at[0] = state.step
    end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
    finished = state.step >= end or state.stopped_early  # killed after the last checkpoint
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    family = model_family(unwrapped)
    parameters = [p for p in model.parameters() if p.requires_grad]
    world, rank = accelerator.num_processes, accelerator.process_index
    device = accelerator.device

    batches = training_batches(train, cfg.batch_size, cfg.seed, cfg.batching, cfg.group_batches, strata)
    sample = fixed_sample(validation, cfg.validation_examples, cfg.validation_seed)
    validation_seconds = 0.0
    read_every = host_read_interval(device)
    pending: list[torch.Tensor] = []          # step losses not yet read from the device
    recent: list[float] = []                  # step losses read since the last curve point
    window_started = time.perf_counter()
    bar = progress(range(state.step, end if not finished else state.step), desc="train",
                   unit="step", initial=state.step, total=cfg.max_steps)
    for step in bar:
        model.train()
        step_loss = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum_steps):
            index = (step * cfg.grad_accum_steps + micro) * world + rank
            batch = to_device(collate(batches(index), pad_id, family), device)
            with accelerator.autocast():
                loss = model(**batch).loss / cfg.grad_accum_steps
            accelerator.backward(loss)
            step_loss += loss.detach().float()
        if world > 1:   # each process saw its own batches: the step's loss is their mean
            step_loss = accelerator.reduce(step_loss, "mean")
        accelerator.clip_grad_norm_(parameters, cfg.clip_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        pending.append(step_loss)
        state.step = progress_at[0] = step + 1

        evaluate_now = state.step % cfg.eval_every == 0 or state.step in (cfg.max_steps, end)
        curve_point = evaluate_now or state.step % LOG_EVERY == 0
        if curve_point or len(pending) >= read_every:
            losses = torch.stack(pending).tolist()      # the window's one wait for the device
            elapsed = time.perf_counter() - window_started
            state.train_seconds += elapsed
            # The steps of a window ran back to back without a wait: each gets the window's mean.
            state.step_seconds.extend([elapsed / len(losses)] * len(losses))
            first_step = state.step - len(losses) + 1
            for offset, value in enumerate(losses):
                if not math.isfinite(value):
                    raise FloatingPointError(f"training loss is {value} at step {first_step + offset}; "
                                             f"lower the learning rate")
            recent.extend(losses)
            pending = []
            window_started = time.perf_counter()
        if not curve_point:
            continue
        point = {"step": state.step, "train_loss": sum(recent) / len(recent), "val_loss": None}
        recent = []
        if evaluate_now:
            started = time.perf_counter()
            point["val_loss"] = validation_loss(model, sample, cfg.batch_size, pad_id, accelerator)
            validation_seconds += time.perf_counter() - started
            if point["val_loss"] < state.best_val_loss:
                state.best_val_loss, state.best_step, state.bad_evaluations = point["val_loss"], state.step, 0
                best_weights = cpu_copy(trainable_state_dict(unwrapped))
            else:
                state.bad_evaluations += 1
            log.info("step %d: train loss %.4f, validation loss %.4f on %d examples (best %.4f at %d)",
                     state.step, point["train_loss"], point["val_loss"], len(sample), state.best_val_loss,
                     state.best_step)
        state.curve.append(point)
        bar.set_postfix(loss=f"{point['train_loss']:.3f}")
        if evaluate_now and accelerator.is_main_process and on_validation is not None:
            on_validation(point)
        if evaluate_now and accelerator.is_main_process:
            save_checkpoint(checkpoint_dir, unwrapped, optimizer, schedule, state, best_weights, fingerprint)
        window_started = time.perf_counter()
        if evaluate_now and cfg.early_stopping_patience and state.bad_evaluations >= cfg.early_stopping_patience:
            state.stopped_early = True
            log.info("early stop at step %d: no validation improvement in %d evaluations",
                     state.step, state.bad_evaluations)
            break
    bar.close()

    # The best validation weights are the result of a run that is over; a paused one keeps its own.
    full_loss = None
    if state.stopped_early or state.step >= cfg.max_steps:
        with torch.no_grad():
            named = dict(unwrapped.named_parameters())
            for name, tensor in best_weights.items():
                named[name].copy_(tensor)
        if len(sample) < len(validation):
            started = time.perf_counter()
            full_loss = validation_loss(model, validation, cfg.batch_size, pad_id, accelerator)
            validation_seconds += time.perf_counter() - started
            log.info("best weights (step %d): validation loss %.4f on all %d validation examples (%.4f on the "
                     "%d-example sample)", state.best_step, full_loss, len(validation), state.best_val_loss,
                     len(sample))
    unwrapped.eval()
    warm = state.step_seconds[3:] or state.step_seconds or [float("nan")]
    step_time = sum(warm) / len(warm)
    examples_per_step = cfg.batch_size * cfg.grad_accum_steps * world
    return FineTuneResult(state=state, stopped_early=state.stopped_early, step_time_s=step_time,
                          examples_per_s=examples_per_step / step_time, resumed_from_step=resumed_from,
                          epoch_times_s=epoch_times(state.step_seconds, cfg.grad_accum_steps * world,
                                                    batches.per_epoch),
                          validation_examples=len(sample), full_validation_loss=full_loss,
                          validation_seconds=validation_seconds)


def host_read_interval(device: torch.device) -> int:
    """Optimizer steps between reads of the loss by the host. On the CPU a read costs nothing
    (the loss is already computed when the step returns), so every step is read and a
    diverging run stops at its first non-finite step; on an accelerator a read waits for the
    device, so it happens at the curve points only."""
    return 1 if device.type == "cpu" else LOG_EVERY


def cpu_copy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy kept in host memory: the best weights of a full fine-tuning would otherwise hold
    a second copy of the model on the accelerator."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in tensors.items()}
