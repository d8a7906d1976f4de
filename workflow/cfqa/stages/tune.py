"""Stage `tune`: choose one method's learning rate on the validation set.

The search (cfqa.training.lr_search) tries `tune.trials` rates around the method's configured
`train.lr`: the grid `tune.lr_factors`, extended beyond its edge while the best rate is there,
then rates beside the best. Every trial trains with one seed (`tune.seed`) on the schedule of
a full training run (`train.max_steps`) and is scored at the rungs `tune.rungs` (fractions of
that run): contextual EM on the validation questions' `tune.variant` contexts, generated as
`evaluate` does, with the validation loss on a fixed sample as the tie-breaker. After each
rung but the last the better trials continue from their checkpoint. A trial whose loss
becomes non-finite is `diverged` and stops. Never reads test data.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from cfqa.training.backbone import backbone_dir, build_method_model
from cfqa.config import Config, MethodConfig, TuneConfig
from cfqa.contract import LrRung, LrSelection, LrTrial, write_record
from cfqa.contract.run_info import directory_sha256, files_sha256, run_info
from cfqa.evaluation.contextual_em import contextual_em_pct
from cfqa.layout import variant_file
from cfqa.io.logs import get_logger
from cfqa.io.progress import progress
from cfqa.training.batches import (TokenizedExample, fixed_sample, text_pairs, tokenize_pairs, variant_rows,
                                   variant_strata)
from cfqa.training.loop import fine_tune, make_accelerator
from cfqa.training.lr_search import RungScore, SearchPlan, SearchResult, Trial, rung_steps, search

log = get_logger(__name__)


def criterion(tune: TuneConfig) -> str:
    return (f"highest validation {tune.variant} contextual EM at the last rung, then lowest validation loss "
            f"(successive halving on the real schedule)")


def trial_config(mcfg: MethodConfig, lr: float) -> MethodConfig:
    """One trial's settings: its lr on the method's own schedule (train.max_steps), validated
    only at the rungs (stop_at) and never stopped early: the rungs compare trials."""
    train = dataclasses.replace(mcfg.train, lr=lr, eval_every=mcfg.train.max_steps, early_stopping_patience=0)
    return dataclasses.replace(mcfg, train=train)


def search_plan(tune: TuneConfig, max_steps: int) -> SearchPlan:
    return SearchPlan(factors=tuple(tune.lr_factors), trials=tune.trials,
                      rung_steps=rung_steps(tune.rungs, max_steps), keep_fraction=tune.keep_fraction)


@dataclasses.dataclass
class TrialRunner:
    """Trains trials to rungs, each in its own checkpoint folder under `scratch`, and scores them."""
    mcfg: MethodConfig
    cfg: Config
    models: Path
    tokenizer: object
    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    em_rows: list[dict]
    scratch: Path
    strata: list[int] | None = None       # each training example's variant (train.batching: stratified)
    device: str = "cpu"

    def checkpoint(self, lr: float) -> Path:
        return self.scratch / f"lr{lr!r}"

    def __call__(self, lr: float, steps: int) -> RungScore:
        started = time.perf_counter()
        mcfg = trial_config(self.mcfg, lr)
        model, _, _ = build_method_model(mcfg, self.models)
        accelerator = make_accelerator(mcfg.train)
        self.device = str(accelerator.device)
        try:
            result = fine_tune(model, self.train, self.validation, mcfg.train, pad_id=self.tokenizer.pad_token_id,
                               checkpoint_dir=self.checkpoint(lr), fingerprint=f"tune lr={lr!r}",
                               accelerator=accelerator, strata=self.strata, stop_at=steps)
        except FloatingPointError as error:   # the training loss became non-finite
            log.info("lr %g diverged before step %d: %s", lr, steps, error)
            return RungScore(steps=steps, em_pct=None, loss=None)
        losses = [p["val_loss"] for p in result.state.curve if p["step"] == result.state.step and p["val_loss"] is not None]
        loss = losses[-1] if losses else None
        if loss is None or not math.isfinite(loss):
            return RungScore(steps=result.state.step, em_pct=None, loss=None)
        model = accelerator.unwrap_model(model)
        em = contextual_em_pct(model, self.tokenizer, self.em_rows, mcfg.train, self.cfg.evaluate, accelerator.device,
                               desc=f"validate lr={lr:g}")
        log.info("lr %g at step %d: validation %s contextual EM %.1f %%, loss %.4f (%.1f s)", lr,
                 result.state.step, self.cfg.tune.variant, em, loss, time.perf_counter() - started)
        return RungScore(steps=result.state.step, em_pct=em, loss=loss)


def trial_record(trial: Trial, last_rung: int) -> LrTrial:
    status = "diverged" if trial.diverged else "finalist" if trial.last.steps >= last_rung else "pruned"
    return LrTrial(lr=trial.lr, origin=trial.origin, status=status,
                   rungs=[LrRung(steps=r.steps, val_contextual_em_pct=r.em_pct, val_loss=r.loss) for r in trial.rungs])


def chosen_or_error(result: SearchResult, method: str) -> Trial:
    if result.chosen.diverged:
        raise FloatingPointError(f"method {method!r}: every learning rate diverged "
                                 f"({', '.join(f'{t.lr:g}' for t in result.trials)}); lower methods.{method}.train.lr "
                                 f"or tune.lr_factors in params.yaml")
    return result.chosen


def run(cfg: Config, variants: Path, models: Path, out: Path, method: str) -> None:
    started = time.perf_counter()
    tune = cfg.tune
    mcfg = cfg.method(method, tune.seed)
    tcfg = mcfg.train
    torch.set_num_threads(tcfg.threads)
    plan = search_plan(tune, tcfg.max_steps)
    log.info("tuning method %s (%s on backbone %s): %d rates from the grid %g x %s, rungs at steps %s of %d, "
             "keeping %g after each; seed %d", method, mcfg.method, mcfg.backbone, plan.trials, tcfg.lr,
             list(tune.lr_factors), list(plan.rung_steps), tcfg.max_steps, tune.keep_fraction, tune.seed)

    backbone = backbone_dir(models, mcfg.backbone)
    tokenizer = AutoTokenizer.from_pretrained(backbone, local_files_only=True)
    data_files = [variant_file(variants, split, v) for split in ("train", "validation") for v in tcfg.mixture]
    em_file = variant_file(variants, "validation", tune.variant)
    data_files += [] if em_file in data_files else [em_file]
    train_rows = variant_rows(variants, "train", tcfg.mixture)
    train = tokenize_pairs(tokenizer, text_pairs(train_rows, tcfg.target_format),
                           tcfg.max_input_length, tcfg.max_target_length)
    validation_all = tokenize_pairs(tokenizer, text_pairs(variant_rows(variants, "validation", tcfg.mixture),
                                                          tcfg.target_format),
                                    tcfg.max_input_length, tcfg.max_target_length)
    # The same fixed samples for every learning rate: the loss on the mixture, EM (generation,
    # the costly part on NQ's ~20k validation rows per variant) on tune.variant.
    validation = fixed_sample(validation_all, tune.validation_examples, tune.seed)
    em_rows = fixed_sample(variant_rows(variants, "validation", (tune.variant,)), tune.validation_examples, tune.seed)
    log.info("read %d training and %d validation examples (mixture %s, %s targets) from %s; loss on %d "
             "validation examples, EM on %d validation %s rows", len(train), len(validation_all),
             "+".join(tcfg.mixture), tcfg.target_format, variants, len(validation), len(em_rows), tune.variant)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent) as scratch:
        runner = TrialRunner(mcfg=mcfg, cfg=cfg, models=models, tokenizer=tokenizer, train=train,
                             validation=validation, em_rows=em_rows, scratch=Path(scratch),
                             strata=variant_strata(train_rows))
        bar = progress(total=plan.planned_steps, desc=f"tune {method}", unit="step")
        reached: dict[float, int] = {}

        def advance(lr: float, steps: int) -> RungScore:
            score = runner(lr, steps)
            bar.update(steps - reached.get(lr, 0))
            reached[lr] = steps
            return score

        result = search(tcfg.lr, plan, advance)
        bar.close()
    chosen = chosen_or_error(result, method)
    low, high = result.searched_range
    params = {"tune": dataclasses.asdict(tune), "method": dataclasses.asdict(mcfg),
              "evaluate": dataclasses.asdict(cfg.evaluate)}
    selection = LrSelection(
        method=method, seed=tune.seed, criterion=criterion(tune), max_steps=tcfg.max_steps,
        rung_steps=list(plan.rung_steps), trials=[trial_record(t, plan.rung_steps[-1]) for t in result.trials],
        chosen_lr=chosen.lr, searched_lr_range=[low, high], chosen_inside=result.chosen_inside,
        run=run_info("tune", "completed", params, runner.device, data_sha256=files_sha256(data_files),
                     backbone_sha256=directory_sha256(backbone)))
    write_record(out, selection)
    log.info("chose lr %g for %s (validation %s contextual EM %.1f %%, loss %.4f at step %d; searched %g to %g, "
             "chosen %s; configured %g); wrote %s in %.1f s", chosen.lr, method, tune.variant, chosen.last.em_pct,
             chosen.last.loss, chosen.last.steps, low, high, "inside" if result.chosen_inside else "AT AN EDGE",
             tcfg.lr, out, time.perf_counter() - started)
