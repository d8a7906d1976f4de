"""Stage `evaluate`: one trained (method, seed) run generates on the `test` (unseen questions)
and `seen` (training questions with fresh contexts) sets in all four variants; score, and
measure the model's loss on each variant's targets; log the run to MLflow."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from cfqa.training.backbone import backbone_dir, build_method_model
from cfqa.config import Config
from cfqa.contract import (WEIGHTS, Inference, MethodFiles, MetricsRecord, ResultsError, read_train_record,
                           write_metrics, write_predictions, write_question_scores, write_record)
from cfqa.contract.run_info import directory_sha256, files_sha256, run_info
from cfqa.model.device import resolve
from cfqa.evaluation.generation import generate_texts
from cfqa.evaluation.scoring import (baseline_scores, memorization, most_frequent_answers,
                                     prediction_record, question_scores, scores_by_variant)
from cfqa.formats import VARIANTS
from cfqa.analysis.headline import headline
from cfqa.model.hub import read_source_record
from cfqa.layout import variant_file
from cfqa.io.logs import get_logger
from cfqa.methods.base import load_trainable
from cfqa.training.examples import training_examples
from cfqa.training.batches import variant_rows
from cfqa.training.loop import make_accelerator, validation_loss

log = get_logger(__name__)
QUESTION_SETS = ("test", "seen")


def target_losses(network, tokenizer, examples: list, strata: list[int], batch_size: int,
                  mcfg) -> dict[str, float]:
    """Per variant: the mean loss per target token, teacher-forced on the target the training
    format defines, computed as training computes its validation loss (same tokenization,
    truncation, batching and autocast). `strata`: each example's variant index."""
    accelerator = make_accelerator(mcfg.train)
    losses = {}
    for index in sorted(set(strata)):
        chosen = [example for example, stratum in zip(examples, strata) if stratum == index]
        losses[VARIANTS[index]] = validation_loss(network, chosen, batch_size, tokenizer.pad_token_id, accelerator)
    return losses


def run(cfg: Config, variants: Path, models: Path, model: Path, results: Path, method: str, seed: int,
        tokenized: Path | None = None) -> None:
    """`models` holds the backbones; `model` is the run's trained directory (train's --out)."""
    started = time.perf_counter()
    mcfg = cfg.method(method, seed)
    ecfg = cfg.evaluate
    files = MethodFiles(results)
    weights = model / WEIGHTS
    # Read before any work: a missing or stale train.json fails in a second, not after generating.
    trained = read_train_record(files.train_record, method, seed)
    if (trained.method, trained.seed) != (method, seed):
        raise ResultsError(f"{files.train_record}: records method {trained.method!r} seed {trained.seed}, "
                           f"not {method!r} seed {seed}; pass the results directory of this run")
    backbone_sha = directory_sha256(backbone_dir(models, mcfg.backbone))
    if trained.run.backbone_sha256 != backbone_sha:
        raise ResultsError(f"{weights}: trained on another backbone than {backbone_dir(models, mcfg.backbone)} "
                           f"holds now; rerun `cfqa train --method {method} --seed {seed}`")
    torch.set_num_threads(ecfg.threads)
    network, tokenizer, spec = build_method_model(mcfg, models)
    load_trainable(network, weights)
    if spec.prepare_for_inference is not None:
        spec.prepare_for_inference(network)
    network.eval()
    device = torch.device(resolve(mcfg.train.device, f"method {method!r} seed {seed}"))
    network.to(device)
    log.info("loaded %s seed %d with trained weights from %s", method, seed, weights)

    records, questions, sets, by_type, memorized = [], [], {}, {}, {}
    generated, seconds = 0, 0.0
    data_files = [variant_file(variants, set_name, v) for set_name in QUESTION_SETS for v in VARIANTS]
    for set_name in QUESTION_SETS:
        rows = variant_rows(variants, set_name, VARIANTS)
        # The training format's examples of every variant, in the rows' order: their inputs
        # are what generation reads, their targets what the target loss scores.
        examples, strata = training_examples(tokenizer, variants, tokenized,
                                             dataclasses.replace(mcfg, train=dataclasses.replace(
                                                 mcfg.train, mixture=VARIANTS)), set_name)
        run_ = generate_texts(network, tokenizer, None, encoded=[source for source, _ in examples],
                              batch_size=ecfg.batch_size, max_input_length=mcfg.train.max_input_length,
                              max_new_tokens=ecfg.max_new_tokens, num_beams=ecfg.num_beams,
                              device=device, desc=f"generate {set_name}", bf16=mcfg.train.bf16)
        set_records = [prediction_record(r, set_name, text) for r, text in zip(rows, run_.texts)]
        records.extend(set_records)
        set_questions = question_scores(set_records, mcfg.train.target_format)
        questions.extend(set_questions)
        sets[set_name], by_type[set_name] = scores_by_variant(set_questions)
        losses = target_losses(network, tokenizer, examples, strata, ecfg.batch_size, mcfg)
        sets[set_name] = {variant: {**scores, "target_loss_nats": losses.get(variant)}
                          for variant, scores in sets[set_name].items()}
        memorized[set_name] = memorization(set_records)
        generated, seconds = generated + len(rows), seconds + run_.seconds
        log.info("%s: %d examples; contextual EM %s", set_name, len(rows),
                 {v: None if s["contextual_em_pct"] is None else round(s["contextual_em_pct"], 1)
                  for v, s in sets[set_name].items()})

    frequent = most_frequent_answers(variant_rows(variants, "train", ("factual",)))
    metrics = MetricsRecord(
        method=method, seed=seed,
        run=run_info("evaluate", "completed",
                     {**dataclasses.asdict(mcfg), "evaluate": dataclasses.asdict(ecfg)},
                     str(device), data_sha256=files_sha256(data_files), backbone_sha256=backbone_sha,
                     backbone_source=read_source_record(backbone_dir(models, mcfg.backbone))),
        sets=sets, by_type=by_type, memorization=memorized,
        most_frequent_em_pct={set_name: baseline_scores([r for r in records if r.set == set_name], frequent)
                              for set_name in QUESTION_SETS},
        inference=Inference(examples_per_s=generated / seconds, per_example_ms=1000 * seconds / generated,
                            batch_size=ecfg.batch_size, num_beams=ecfg.num_beams),
        wall_time_s=time.perf_counter() - started,
        family=cfg.pretrain.family,
    )
    write_predictions(files.predictions, records)
    write_question_scores(files.per_question, questions)
    write_metrics(files.metrics, metrics)
    write_record(files.headline, headline(trained, metrics))
    log.info("wrote %s (%d predictions), %s, %s, %s and %s", files.predictions, len(records), files.per_question,
             files.metrics, files.evaluation_run, files.headline)
    # imported late: mlflow takes seconds to import
    from cfqa.tracking.failures import failures_as_warnings
    from cfqa.tracking.pipeline import pipeline_run
    from cfqa.tracking.results_dir import log_results_dir

    with failures_as_warnings(f"logging {method}-seed{seed} to {cfg.tracking.experiment!r}"):
        log_results_dir(cfg.tracking, results, method=method, pipeline=pipeline_run(cfg),
                        datasets={"evaluation": data_files})
