"""Training examples from the variant files, tokenized once, and padded batches."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from cfqa.atomic_io import read_jsonl
from cfqa.formats import format_input, format_target

TokenizedExample = tuple[list[int], list[int]]


def variant_rows(variants_dir: Path, split: str, variants: Sequence[str]) -> list[dict]:
    rows = []
    for variant in variants:
        path = variants_dir / split / f"{variant}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: variant file missing; run `cfqa counterfactuals`")
        rows.extend(read_jsonl(path))
    return rows


def text_pairs(rows: list[dict], target_format: str) -> list[tuple[str, str]]:
    return [(format_input(r["question"], r["context"]),
             format_target(r["contextual_answer"], r["parametric_answer"], target_format))
            for r in rows]


def tokenize_pairs(tokenizer, pairs: list[tuple[str, str]], max_input: int, max_target: int) -> list[TokenizedExample]:
    inputs = tokenizer([p[0] for p in pairs], truncation=True, max_length=max_input).input_ids
    targets = tokenizer([p[1] for p in pairs], truncation=True, max_length=max_target).input_ids
    return list(zip(inputs, targets))


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads inputs with pad_id and labels with -100 (ignored by the loss)."""
    width_in = max(len(i) for i, _ in examples)
    width_out = max(len(t) for _, t in examples)
    input_ids = torch.full((len(examples), width_in), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width_out), -100, dtype=torch.long)
    for row, (source, target) in enumerate(examples):
        input_ids[row, :len(source)] = torch.tensor(source)
        labels[row, :len(target)] = torch.tensor(target)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": labels}


@functools.lru_cache(maxsize=4)
def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation fixed by (seed, epoch): resuming at any step replays the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def batch_at(examples: Sequence[TokenizedExample], step: int, batch_size: int, seed: int) -> list[TokenizedExample]:
    """The examples of optimizer micro-step `step` (epochs are consecutive permutations)."""
    per_epoch = max(len(examples) // batch_size, 1)
    epoch, index = divmod(step, per_epoch)
    order = epoch_order(len(examples), seed, epoch)
    return [examples[i] for i in order[index * batch_size:(index + 1) * batch_size]]


def sequential_batches(examples: Sequence[TokenizedExample], batch_size: int) -> Iterator[list[TokenizedExample]]:
    for start in range(0, len(examples), batch_size):
        yield list(examples[start:start + batch_size])
