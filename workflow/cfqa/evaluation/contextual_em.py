"""Contextual EM of a model on variant rows, generated and scored as the evaluate stage does
(same input format, generation settings, answer parsing and match): what `tune` ranks trials by
on the validation set."""
from __future__ import annotations

import torch

from cfqa.scoring.answer_metrics import exact_match
from cfqa.config import EvaluateConfig, TrainConfig
from cfqa.evaluation.generation import generate_texts
from cfqa.evaluation.scoring import gold_contextual
from cfqa.formats import format_input, parse_generation


def contextual_em_pct(model, tokenizer, rows: list[dict], tcfg: TrainConfig, ecfg: EvaluateConfig,
                      device: torch.device, desc: str = "validate") -> float:
    """Percent of `rows` whose generated contextual answer matches what the context says."""
    if not rows:
        raise ValueError("no rows to score")
    was_training = model.training
    model.eval()
    try:
        run = generate_texts(model, tokenizer, [format_input(r["question"], r["context"]) for r in rows],
                             batch_size=ecfg.batch_size, max_input_length=tcfg.max_input_length,
                             max_new_tokens=ecfg.max_new_tokens, num_beams=ecfg.num_beams, device=device,
                             desc=desc)
    finally:
        model.train(was_training)
    hits = [exact_match(parse_generation(text).contextual, gold_contextual(row)) for row, text in zip(rows, run.texts)]
    return 100.0 * sum(hits) / len(hits)
