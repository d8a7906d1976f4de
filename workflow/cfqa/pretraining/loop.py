"""Pretraining the tiny models: span corruption, then prefix-LM continuation (LM adaptation)
for T5; next-token prediction for a decoder-only model (see causal_lm.py)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from cfqa.config import PretrainConfig
from cfqa.io.logs import get_logger
from cfqa.model.model_family import ModelFamily
from cfqa.pretraining.span_corruption import corrupt, random_spans_noise_mask
from cfqa.io.progress import progress
from cfqa.training.batches import collate
from cfqa.training.optimization import make_optimizer, make_schedule

log = get_logger(__name__)
Example = tuple[list[int], list[int]]


def pack(sentences: list[list[int]], max_length: int) -> list[list[int]]:
    """Concatenates tokenized sentences into sequences of at most max_length - 1 tokens
    (room for eos); a longer sentence is cut."""
    packed, current = [], []
    budget = max_length - 1
    for ids in sentences:
        ids = ids[:budget]
        if current and len(current) + len(ids) > budget:
            packed.append(current)
            current = []
        current = current + ids
    if current:
        packed.append(current)
    return packed


def span_corruption_example(sequence: list[int], cfg: PretrainConfig, sentinels: list[int],
                            eos_id: int, rng: np.random.Generator) -> Example:
    mask = random_spans_noise_mask(len(sequence), cfg.noise_density, cfg.mean_noise_span_length, rng)
    return corrupt(sequence, mask, sentinels, eos_id)


def prefix_lm_example(sequence: list[int], eos_id: int, rng: np.random.Generator) -> Example:
    split = int(rng.integers(1, len(sequence)))
    return sequence[:split] + [eos_id], sequence[split:] + [eos_id]


def next_token_example(sequence: list[int], rng: np.random.Generator) -> Example:
    """A decoder-only LM's example: no prompt, every token a target (collated as a causal
    batch, where the model shifts the labels to predict each token from the ones before)."""
    return [], list(sequence)


def pretrain(model: nn.Module, sequences: list[list[int]], make_example: Callable[[list[int], np.random.Generator], Example],
             *, steps: int, cfg: PretrainConfig, pad_id: int, desc: str,
             family: ModelFamily = ModelFamily.SEQ2SEQ) -> list[float]:
    """Trains `model` for `steps` steps on freshly drawn (and noised) batches collated for
    the model `family`; returns the loss curve."""
    sequences = [s for s in sequences if len(s) >= 2]
    rng = np.random.default_rng(cfg.seed)
    optimizer = make_optimizer(model.parameters(), "adamw", cfg.lr, 0.0)
    schedule = make_schedule(optimizer, min(100, steps // 10), steps)
    model.train()
    losses = []
    started = time.perf_counter()
    bar = progress(range(steps), desc=desc, unit="step")
    for step in bar:
        batch_ids = rng.integers(0, len(sequences), size=cfg.batch_size)
        batch = collate([make_example(sequences[i], rng) for i in batch_ids], pad_id, family)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            log.info("%s step %d/%d loss %.3f (%.1f s)", desc, step + 1, steps,
                     float(np.mean(losses[-50:])), time.perf_counter() - started)
    model.eval()
    return losses
