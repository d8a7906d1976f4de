"""Stage `train`: fine-tune one method with one seed on the training mixture; save only its
trainable weights and record accuracy-independent cost (parameters, memory, speed, checkpoint
size). The run's MLflow run opens here, as training starts; evaluate ends it."""
from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Callable

import orjson
import torch

from cfqa.io.atomic_io import atomic_dir
from cfqa.training.backbone import backbone_dir, build_method_model
from cfqa.config import Config, MethodConfig
from cfqa.contract import (WEIGHTS, CurveRow, FirstTargetToken, MethodFiles, ParameterCounts, StepMemoryParts,
                           TrainCost, TrainRecord, write_curve, write_record)
from cfqa.contract.run_info import directory_sha256, files_sha256, run_info
from cfqa.model.hub import read_source_record
from cfqa.layout import checkpoint_dir, variant_file
from cfqa.io.logs import get_logger
from cfqa.model.measure import PeakMemory, StepMemory, training_step_memory
from cfqa.methods.base import count_parameters, save_trainable
from cfqa.model.model_family import model_family
from cfqa.training.batches import batch_at, collate, fixed_sample
from cfqa.training.checkpoint import remove_checkpoint
from cfqa.training.examples import training_examples
from cfqa.training.first_token import first_token_scores
from cfqa.training.loop import fine_tune, make_accelerator
from cfqa.training.lr_selection import apply_lr_selection
from cfqa.training.optimization import make_optimizer
from cfqa.tracking.identity import run_identity, run_params
from cfqa.tracking.pipeline import pipeline_run
from cfqa.tracking.training_run import TrainingRun, start_training_run

log = get_logger(__name__)


def method_params(mcfg: MethodConfig) -> dict:
    """The params slice of one method's run: its registry entry, backbone, options, train block."""
    return dataclasses.asdict(mcfg)


def resume_fingerprint(mcfg: MethodConfig, data_sha256: str, backbone_sha256: str) -> str:
    """A checkpoint is resumed only by a run of the same method settings (seed included), data
    and backbone."""
    key = {"params": method_params(mcfg), "data": data_sha256, "backbone": backbone_sha256}
    return hashlib.sha256(orjson.dumps(key, option=orjson.OPT_SORT_KEYS)).hexdigest()


def measure_step_memory(model, batch, mcfg: MethodConfig, accelerator) -> StepMemory:
    """One step on a copy, so the measurement does not move the model being trained."""
    probe = copy.deepcopy(model).to(accelerator.device)
    optimizer = make_optimizer(probe.parameters(), mcfg.train.optimizer, mcfg.train.lr, mcfg.train.weight_decay)
    with accelerator.autocast():
        memory = training_step_memory(probe, {k: v.to(accelerator.device) for k, v in batch.items()}, optimizer)
    del probe, optimizer
    return memory


def data_files(variants: Path, mcfg: MethodConfig) -> dict[str, list[Path]]:
    """The variant files training reads, by what it reads them for."""
    return {context: [variant_file(variants, split, v) for v in mcfg.train.mixture]
            for context, split in (("training", "train"), ("validation", "validation"))}


def start_tracking(cfg: Config, mcfg: MethodConfig, variants: Path, method: str, seed: int) -> TrainingRun:
    """The run's MLflow run, tagged so that evaluate finds it: pipeline run, method, seed and
    the hash of the params slice train.json will record. Under a multi-process launch only
    rank 0 (torch.distributed's RANK) tracks: one run, not one per process."""
    if os.environ.get("RANK", "0") != "0":
        return TrainingRun()
    params = method_params(mcfg)
    identity = run_identity(pipeline_run(cfg), method, seed, params)
    return start_training_run(cfg.tracking, identity, datasets=data_files(variants, mcfg),
                              params=run_params(method, mcfg.method, mcfg.backbone, seed, params))


def run(cfg: Config, variants: Path, models: Path, out: Path, results: Path, method: str, seed: int,
        lr_selection: Path | None = None, tokenized: Path | None = None) -> None:
    started = time.perf_counter()
    mcfg = cfg.method(method, seed)
    if lr_selection is not None:
        mcfg = apply_lr_selection(mcfg, lr_selection)
        log.info("learning rate %g chosen by `cfqa tune` (%s)", mcfg.train.lr, lr_selection)
    tracking = start_tracking(cfg, mcfg, variants, method, seed)
    try:
        curve = train_and_record(mcfg, variants, models, out, results, method, seed, lr_selection, started,
                                 on_validation=tracking.log_point, tokenized=tokenized)
    except BaseException:
        tracking.fail()
        raise
    tracking.training_done(curve)


def train_and_record(mcfg: MethodConfig, variants: Path, models: Path, out: Path, results: Path, method: str,
                     seed: int, lr_selection: Path | None, started: float,
                     on_validation: Callable[[dict], None] | None = None,
                     tokenized: Path | None = None) -> list[dict]:
    """Trains and writes the run's files; returns the training curve's points."""
    tcfg = mcfg.train
    torch.set_num_threads(tcfg.threads)
    model, tokenizer, spec = build_method_model(mcfg, models)
    counts = count_parameters(model)
    log.info("method %s (%s), seed %d, on backbone %s: %d trainable of %d parameters (%.3f %%)", method,
             spec.name, seed, mcfg.backbone, counts.trainable, counts.total, counts.trainable_percent)

    read = [path for paths in data_files(variants, mcfg).values() for path in paths]
    (train, strata), (validation, _) = (training_examples(tokenizer, variants, tokenized, mcfg, split)
                                        for split in ("train", "validation"))
    log.info("read %d training and %d validation examples (mixture %s, %s targets) from %s%s",
             len(train), len(validation), "+".join(tcfg.mixture), tcfg.target_format, variants,
             f", tokenized in {tokenized}" if tokenized else "")

    accelerator = make_accelerator(tcfg)
    first_batch = collate(batch_at(train, 0, tcfg.batch_size, tcfg.seed), tokenizer.pad_token_id,
                          model_family(model))
    memory = measure_step_memory(model, first_batch, mcfg, accelerator)
    log.info("training-step memory, sum of parts: %.2f MB (parameters %.2f, gradients %.2f, "
             "optimizer state %.2f, activations %.2f)", memory.total_bytes / 1e6, memory.parameter_bytes / 1e6,
             memory.gradient_bytes / 1e6, memory.optimizer_state_bytes / 1e6, memory.activation_bytes / 1e6)

    # On the fixed validation sample (the whole set at t5-large scale would cost two full passes).
    probe = (fixed_sample(validation, tcfg.validation_examples, tcfg.validation_seed), tokenizer.pad_token_id,
             tcfg.batch_size, accelerator.device)
    first_before = first_token_scores(model, *probe)

    data_sha = files_sha256(read)
    backbone_sha = directory_sha256(backbone_dir(models, mcfg.backbone))
    fingerprint = resume_fingerprint(mcfg, data_sha, backbone_sha)
    checkpoints = checkpoint_dir(models, method, seed)
    with PeakMemory(cuda=accelerator.device.type == "cuda") as peak:
        result = fine_tune(model, train, validation, tcfg, pad_id=tokenizer.pad_token_id,
                           checkpoint_dir=checkpoints, fingerprint=fingerprint, accelerator=accelerator,
                           on_validation=on_validation, strata=strata)
    model = accelerator.unwrap_model(model)
    if not accelerator.is_main_process:
        return result.state.curve       # another process of a data-parallel run: rank 0 writes the files
    first_after = first_token_scores(model, *probe)
    first_ids = collections.Counter(target[0] for _, target in probe[0])
    first_target = FirstTargetToken(
        token=tokenizer.convert_ids_to_tokens(int(first_ids.most_common(1)[0][0])), vocabulary=len(tokenizer),
        rank_median_before=first_before.rank_median, rank_median_after=first_after.rank_median,
        top1_before_pct=first_before.top1_pct, top1_after_pct=first_after.top1_pct,
        probability_before_pct=first_before.probability_pct, probability_after_pct=first_after.probability_pct)
    log.info("first target token %r at the first answer position: rank %d -> %d (median), probability %.1f %% -> "
             "%.1f %%", first_target.token, first_before.rank_median, first_after.rank_median,
             first_before.probability_pct, first_after.probability_pct)

    with atomic_dir(out) as tmp:
        checkpoint_bytes = save_trainable(model, tmp / WEIGHTS, metadata={"method": method, "seed": str(seed)})
    state = result.state
    record = TrainRecord(
        method=method, registry_method=mcfg.method, backbone=mcfg.backbone, seed=tcfg.seed,
        lr=tcfg.lr, lr_selected=lr_selection is not None,
        run=run_info("train", "stopped_early" if result.stopped_early else "completed", method_params(mcfg),
                     str(accelerator.device), data_sha256=data_sha, backbone_sha256=backbone_sha,
                     backbone_source=read_source_record(backbone_dir(models, mcfg.backbone))),
        params=ParameterCounts(trainable=counts.trainable, total=counts.total,
                               trainable_pct=counts.trainable_percent),
        cost=TrainCost(
            step_memory=StepMemoryParts(parameters_bytes=memory.parameter_bytes,
                                        gradients_bytes=memory.gradient_bytes,
                                        optimizer_state_bytes=memory.optimizer_state_bytes,
                                        activations_bytes=memory.activation_bytes,
                                        sum_bytes=memory.total_bytes),
            peak_memory_bytes=peak.peak_bytes, peak_memory_measure=peak.measure,
            step_time_s=result.step_time_s, train_examples_per_s=result.examples_per_s,
            checkpoint_bytes=checkpoint_bytes, train_time_s=state.train_seconds,
            wall_time_s=time.perf_counter() - started, processes=accelerator.num_processes,
            epoch_times_s=list(result.epoch_times_s), max_epoch_time_s=result.max_epoch_time_s,
        ),
        steps=state.step, best_step=state.best_step, best_val_loss=state.best_val_loss,
        stopped_early=result.stopped_early, resumed_from_step=result.resumed_from_step,
        train_examples=len(train), validation_examples=len(validation),
        validation_sample_examples=result.validation_examples,
        whole_validation_loss_nats=result.full_validation_loss, validation_time_s=result.validation_seconds,
        first_target_token=first_target,
    )
    files = MethodFiles(results)
    write_record(files.train_record, record)
    write_curve(files.train_curve, (CurveRow(step=int(p["step"]), train_loss=p.get("train_loss"),
                                             val_loss=p.get("val_loss")) for p in state.curve))
    remove_checkpoint(checkpoints)
    log.info("wrote %s (%d bytes of trainable weights), %s, %s; %d steps, best validation loss %.4f at "
             "step %d; peak memory %s", out / WEIGHTS, checkpoint_bytes, files.train_record, files.train_curve,
             state.step, state.best_val_loss, state.best_step,
             "unknown" if peak.peak_bytes is None else f"{peak.peak_bytes / 1e6:.1f} MB ({peak.measure})")
    return state.curve
