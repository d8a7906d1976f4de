"""Stage `tune`: choose one method's learning rate on the validation set.

Each learning rate of the grid (the method's configured `train.lr` times `tune.lr_factors`)
fine-tunes the method from the frozen backbone for `tune.max_steps` steps with one seed
(`tune.seed`), validating halfway and at the end; the lowest validation loss wins. A run
whose loss becomes non-finite is `diverged` and cannot win.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from cfqa.backbone import backbone_dir, build_method_model
from cfqa.config import Config, MethodConfig, TuneConfig
from cfqa.contract import LrSelection, LrTrial, write_record
from cfqa.contract.run_info import directory_sha256, files_sha256, run_info
from cfqa.logs import get_logger
from cfqa.progress import progress
from cfqa.training.batches import TokenizedExample, text_pairs, tokenize_pairs, variant_rows, variant_strata
from cfqa.training.loop import fine_tune, make_accelerator

log = get_logger(__name__)

CRITERION = "lowest validation loss"
# Validation examples each trial is scored on (a fixed sample of the validation mixture).
# With validation halfway and at the end, three 300-step trials cost about 60 % of one
# 1500-step training run (little more than their steps), which validates on the whole set
# every `eval_every` steps.


def validation_sample(examples: list[TokenizedExample], size: int, seed: int) -> list[TokenizedExample]:
    """At most `size` examples drawn without replacement (in file order), the same for every
    learning rate; the variants of the mixture keep their shares."""
    if len(examples) <= size:
        return examples
    chosen = np.sort(np.random.default_rng(seed).choice(len(examples), size=size, replace=False))
    return [examples[i] for i in chosen]


def trial_config(mcfg: MethodConfig, tune: TuneConfig, lr: float) -> MethodConfig:
    """The method's settings for one grid point: its lr, tune's steps, validation halfway and at the end."""
    train = dataclasses.replace(mcfg.train, lr=lr, max_steps=tune.max_steps,
                                eval_every=max(tune.max_steps // 2, 1))
    return dataclasses.replace(mcfg, train=train)


def run_trial(mcfg: MethodConfig, models: Path, train: list[TokenizedExample],
              validation: list[TokenizedExample], pad_id: int, scratch: Path,
              strata: list[int] | None = None) -> tuple[LrTrial, str]:
    """(the trial's record, the device it ran on): fine-tune from the backbone with `mcfg`."""
    tcfg = mcfg.train
    model, _, _ = build_method_model(mcfg, models)
    accelerator = make_accelerator(tcfg)
    # Training forwards, to tell at which step a diverging run stopped.
    forwards = [0]

    def count_forward(module, _args):
        forwards[0] += int(module.training)

    hook = model.register_forward_pre_hook(count_forward)
    try:
        result = fine_tune(model, train, validation, tcfg, pad_id=pad_id, checkpoint_dir=scratch,
                           fingerprint=f"tune lr={tcfg.lr!r}", accelerator=accelerator, strata=strata)
    except FloatingPointError as error:  # the training loss became non-finite
        log.info("lr %g diverged: %s", tcfg.lr, error)
        return LrTrial(lr=tcfg.lr, steps=forwards[0] // tcfg.grad_accum_steps, best_val_loss=None,
                       status="diverged"), str(accelerator.device)
    finally:
        hook.remove()
    state = result.state
    val_losses = [p["val_loss"] for p in state.curve if p["val_loss"] is not None]
    if not val_losses or not all(math.isfinite(v) for v in val_losses):
        trial = LrTrial(lr=tcfg.lr, steps=state.step, best_val_loss=None, status="diverged")
    else:
        trial = LrTrial(lr=tcfg.lr, steps=state.step, best_val_loss=state.best_val_loss,
                        status="stopped_early" if result.stopped_early else "completed")
    return trial, str(accelerator.device)


def choose(trials: list[LrTrial], configured_lr: float, method: str) -> LrTrial:
    """The trial with the lowest validation loss; on a tie, the lr nearest (in ratio) to the
    configured one, then the smaller lr."""
    finite = [t for t in trials if t.best_val_loss is not None]
    if not finite:
        raise FloatingPointError(f"method {method!r}: every learning rate diverged "
                                 f"({', '.join(f'{t.lr:g}' for t in trials)}); lower methods.{method}.train.lr "
                                 f"or tune.lr_factors in params.yaml")
    return min(finite, key=lambda t: (t.best_val_loss, abs(math.log(t.lr / configured_lr)), t.lr))


def run(cfg: Config, variants: Path, models: Path, out: Path, method: str) -> None:
    started = time.perf_counter()
    tune = cfg.tune
    mcfg = cfg.method(method, tune.seed)
    tcfg = mcfg.train
    torch.set_num_threads(tcfg.threads)
    lrs = [float(tcfg.lr * factor) for factor in tune.lr_factors]
    log.info("tuning method %s (%s on backbone %s): lr %s (configured %g times %s), %d steps each, seed %d",
             method, mcfg.method, mcfg.backbone, ", ".join(f"{lr:g}" for lr in lrs), tcfg.lr,
             list(tune.lr_factors), tune.max_steps, tune.seed)

    backbone = backbone_dir(models, mcfg.backbone)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    data_files = [variants / split / f"{v}.jsonl" for split in ("train", "validation") for v in tcfg.mixture]
    train_rows = variant_rows(variants, "train", tcfg.mixture)
    train = tokenize_pairs(tokenizer, text_pairs(train_rows, tcfg.target_format),
                           tcfg.max_input_length, tcfg.max_target_length)
    validation_all = tokenize_pairs(tokenizer, text_pairs(variant_rows(variants, "validation", tcfg.mixture),
                                                          tcfg.target_format),
                                    tcfg.max_input_length, tcfg.max_target_length)
    validation = validation_sample(validation_all, tune.validation_examples, tune.seed)
    log.info("read %d training and %d validation examples (mixture %s, %s targets) from %s; "
             "scoring on %d validation examples", len(train), len(validation_all), "+".join(tcfg.mixture),
             tcfg.target_format, variants, len(validation))

    out.parent.mkdir(parents=True, exist_ok=True)
    trials, device = [], "cpu"
    for lr in progress(lrs, desc=f"tune {method}", unit="lr"):
        trial_started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent) as scratch:
            trial, device = run_trial(trial_config(mcfg, tune, lr), models, train, validation,
                                      tokenizer.pad_token_id, Path(scratch) / "checkpoint",
                                      strata=variant_strata(train_rows))
        trials.append(trial)
        log.info("lr %g: %s after %d steps, best validation loss %s (%.1f s)", lr, trial.status, trial.steps,
                 "none" if trial.best_val_loss is None else f"{trial.best_val_loss:.4f}",
                 time.perf_counter() - trial_started)

    chosen = choose(trials, tcfg.lr, method)
    params = {"tune": dataclasses.asdict(tune), "method": dataclasses.asdict(mcfg)}
    selection = LrSelection(method=method, seed=tune.seed, criterion=CRITERION, trials=trials, chosen_lr=chosen.lr,
                            run=run_info("tune", "completed", params, device, data_sha256=files_sha256(data_files),
                                         backbone_sha256=directory_sha256(backbone)))
    write_record(out, selection)
    log.info("chose lr %g for %s (validation loss %.4f; configured %g); wrote %s in %.1f s", chosen.lr, method,
             chosen.best_val_loss, tcfg.lr, out, time.perf_counter() - started)
