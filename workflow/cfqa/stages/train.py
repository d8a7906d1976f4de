"""Stage `train`: fine-tune one method on the training mixture; save only its trainable
weights and record accuracy-independent cost (parameters, memory, speed, checkpoint size)."""
from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import time
from pathlib import Path

import orjson
import torch

from cfqa.atomic_io import atomic_dir, atomic_open, write_json
from cfqa.backbone import build_method_model
from cfqa.config import Config, MethodConfig
from cfqa.logs import get_logger
from cfqa.measure import training_step_memory
from cfqa.methods.base import count_parameters, save_trainable
from cfqa.training.batches import batch_at, collate, text_pairs, tokenize_pairs, variant_rows
from cfqa.training.checkpoint import remove_checkpoint
from cfqa.training.loop import fine_tune, make_accelerator
from cfqa.training.optimization import make_optimizer

log = get_logger(__name__)
WEIGHTS = "trainable.safetensors"
METHOD_FILE = "method.json"
MEMORY_MEASURE = ("one training step: parameters + gradients + optimizer state + activations "
                  "saved for backward (torch.autograd.graph.saved_tensors_hooks); on CUDA also "
                  "torch.cuda.max_memory_allocated")


def method_record(mcfg: MethodConfig) -> dict:
    return {"method": mcfg.name, "registry_method": mcfg.method, "backbone": mcfg.backbone,
            "options": mcfg.options, "train_config": dataclasses.asdict(mcfg.train)}


def files_sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def measure_memory(model, batch, mcfg: MethodConfig, accelerator) -> dict:
    """One step on a copy, so the measurement does not move the model being trained."""
    probe = copy.deepcopy(model).to(accelerator.device)
    optimizer = make_optimizer(probe.parameters(), mcfg.train.optimizer, mcfg.train.lr, mcfg.train.weight_decay)
    with accelerator.autocast():
        memory = training_step_memory(probe, {k: v.to(accelerator.device) for k, v in batch.items()}, optimizer)
    del probe, optimizer
    return memory.as_dict()


def run(cfg: Config, variants: Path, models: Path, out: Path, results: Path, method: str) -> None:
    started = time.perf_counter()
    mcfg = cfg.method(method)
    tcfg = mcfg.train
    torch.set_num_threads(tcfg.threads)
    model, tokenizer, spec = build_method_model(mcfg, models)
    counts = count_parameters(model)
    log.info("method %s (%s) on backbone %s: %d trainable of %d parameters (%.3f %%)", method,
             spec.name, mcfg.backbone, counts.trainable, counts.total, counts.trainable_percent)

    data_files = [variants / split / f"{v}.jsonl" for split in ("train", "validation") for v in tcfg.mixture]
    train_rows = variant_rows(variants, "train", tcfg.mixture)
    validation_rows = variant_rows(variants, "validation", tcfg.mixture)
    train = tokenize_pairs(tokenizer, text_pairs(train_rows, tcfg.target_format),
                           tcfg.max_input_length, tcfg.max_target_length)
    validation = tokenize_pairs(tokenizer, text_pairs(validation_rows, tcfg.target_format),
                                tcfg.max_input_length, tcfg.max_target_length)
    log.info("read %d training and %d validation examples (mixture %s, %s targets) from %s",
             len(train), len(validation), "+".join(tcfg.mixture), tcfg.target_format, variants)

    accelerator = make_accelerator(tcfg)
    first_batch = collate(batch_at(train, 0, tcfg.batch_size, tcfg.seed), tokenizer.pad_token_id)
    memory = measure_memory(model, first_batch, mcfg, accelerator)
    log.info("training-step memory: %.2f MB (%s)", memory["total_bytes"] / 1e6,
             ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in memory.items() if k.endswith("_bytes") and v is not None))

    data_sha = files_sha256(data_files)
    fingerprint = hashlib.sha256(orjson.dumps({**method_record(mcfg), "data": data_sha},
                                              option=orjson.OPT_SORT_KEYS)).hexdigest()
    checkpoint_dir = out.parent / ".checkpoints" / out.name
    result = fine_tune(model, train, validation, tcfg, pad_id=tokenizer.pad_token_id,
                       checkpoint_dir=checkpoint_dir, fingerprint=fingerprint, accelerator=accelerator)
    model = accelerator.unwrap_model(model)

    with atomic_dir(out) as tmp:
        checkpoint_bytes = save_trainable(model, tmp / WEIGHTS, metadata={"method": method})
        write_json(tmp / METHOD_FILE, {**method_record(mcfg), "params": dataclasses.asdict(counts)})
    state = result.state
    record = {
        **method_record(mcfg),
        "seed": tcfg.seed,
        "data_sha256": data_sha,
        "params": {**dataclasses.asdict(counts), "trainable_percent": counts.trainable_percent},
        "cost": {
            "peak_memory_bytes": memory["total_bytes"],
            "memory_measure": MEMORY_MEASURE,
            "memory_breakdown": {"parameters": memory["parameter_bytes"],
                                 "gradients": memory["gradient_bytes"],
                                 "optimizer_state": memory["optimizer_state_bytes"],
                                 "activations": memory["activation_bytes"]},
            "cuda_peak_allocated_bytes": memory["cuda_peak_allocated_bytes"],
            "step_time_s": result.step_time_s,
            "examples_per_s": result.examples_per_s,
            "checkpoint_bytes": checkpoint_bytes,
            "train_time_s": state.train_seconds,
            "wall_time_s": time.perf_counter() - started,
            "device": str(accelerator.device),
            "processes": accelerator.num_processes,
        },
        "steps": state.step,
        "best_step": state.best_step,
        "best_val_loss": state.best_val_loss,
        "stopped_early": result.stopped_early,
        "resumed_from_step": result.resumed_from_step,
        "train_examples": len(train),
        "validation_examples": len(validation),
    }
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / "train.json", record)
    with atomic_open(results / "train_curve.csv", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "train_loss", "val_loss"])
        writer.writeheader()
        writer.writerows(state.curve)
    remove_checkpoint(checkpoint_dir)
    log.info("wrote %s (%d bytes of trainable weights), %s/train.json, %s/train_curve.csv; "
             "%d steps, best validation loss %.4f at step %d", out / WEIGHTS, checkpoint_bytes,
             results, results, state.step, state.best_val_loss, state.best_step)
