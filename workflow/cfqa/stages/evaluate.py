"""Stage `evaluate`: generate on the `test` (unseen questions) and `seen` (training questions
with fresh contexts) sets in all four variants; score; log the run to MLflow."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from cfqa.atomic_io import write_json, write_jsonl
from cfqa.backbone import build_method_model
from cfqa.config import Config
from cfqa.evaluation.generation import generate_texts
from cfqa.evaluation.scoring import (baseline_scores, memorization, most_frequent_answers,
                                     prediction_record, score_set)
from cfqa.formats import VARIANTS, format_input
from cfqa.logs import get_logger
from cfqa.methods.base import load_trainable
from cfqa.stages.train import WEIGHTS
from cfqa.training.batches import variant_rows

log = get_logger(__name__)
QUESTION_SETS = ("test", "seen")


def run(cfg: Config, variants: Path, models: Path, results: Path, method: str) -> None:
    started = time.perf_counter()
    mcfg = cfg.method(method)
    ecfg = cfg.evaluate
    torch.set_num_threads(ecfg.threads)
    model, tokenizer, _ = build_method_model(mcfg, models)
    load_trainable(model, models / method / WEIGHTS)
    model.eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    log.info("loaded %s with trained weights from %s", method, models / method / WEIGHTS)

    records, metrics = [], {"method": method, "sets": {}, "by_type": {}, "memorization": {}}
    generated, seconds = 0, 0.0
    for set_name in QUESTION_SETS:
        rows = variant_rows(variants, set_name, VARIANTS)
        run_ = generate_texts(model, tokenizer, [format_input(r["question"], r["context"]) for r in rows],
                              batch_size=ecfg.batch_size, max_input_length=mcfg.train.max_input_length,
                              max_new_tokens=ecfg.max_new_tokens, num_beams=ecfg.num_beams,
                              device=device, desc=f"generate {set_name}")
        set_records = [prediction_record(r, set_name, text) for r, text in zip(rows, run_.texts)]
        records.extend(set_records)
        metrics["sets"][set_name], metrics["by_type"][set_name] = score_set(set_records)
        metrics["memorization"][set_name] = memorization(set_records)
        generated, seconds = generated + len(rows), seconds + run_.seconds
        log.info("%s: %d examples; contextual EM %s", set_name, len(rows),
                 {v: round(s["contextual_em"], 1) for v, s in metrics["sets"][set_name].items()})

    frequent = most_frequent_answers(variant_rows(variants, "train", ("factual",)))
    metrics["baseline"] = {"most_frequent_answer": {
        set_name: baseline_scores([r for r in records if r["set"] == set_name], frequent)
        for set_name in QUESTION_SETS}}
    metrics["inference"] = {"examples_per_s": generated / seconds, "ms_per_example": 1000 * seconds / generated,
                            "batch_size": ecfg.batch_size, "num_beams": ecfg.num_beams, "device": str(device)}
    metrics["wall_time_s"] = time.perf_counter() - started

    write_jsonl(results / "predictions.jsonl", records)
    write_json(results / "metrics.json", metrics)
    log.info("wrote %s (%d predictions) and %s", results / "predictions.jsonl", len(records),
             results / "metrics.json")
    from cfqa.tracking import log_results_dir  # imported here: mlflow takes seconds to import

    log_results_dir(cfg.tracking, results, method=method)
