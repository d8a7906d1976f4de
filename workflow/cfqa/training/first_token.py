"""How far a model is from starting its answers in the output format.

Every DisentQA target starts with the same token (the `contextual:` marker). Teacher-forced on
validation examples, this measures at the first answer position the rank of each target's first
token among the vocabulary (0: the model's most likely token) and its probability. A method that
never learns the format shows it here before generation does: the marker stays far down the
ranking. Measured before and after training by the train stage (train.json)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cfqa.model.model_family import ModelFamily, model_family
from cfqa.training.batches import TokenizedExample, collate, sequential_batches


@dataclass(frozen=True)
class FirstTokenScores:
    rank_median: int                 # lower median over the examples; 0 = the most likely token
    top1_pct: float                  # share of examples whose first target token is the most likely
    probability_pct: float           # mean probability of the first target token, 0-100


@torch.no_grad()
def first_token_scores(model: nn.Module, examples: Sequence[TokenizedExample], pad_id: int,
                       batch_size: int, device: torch.device) -> FirstTokenScores:
    """Rank and probability of each example's first target token at the first answer position."""
    if not examples:
        raise ValueError("no examples to probe")
    family = model_family(model)
    was_training = model.training
    model.eval()
    ranks: list[int] = []
    probabilities: list[float] = []
    try:
        for chunk in sequential_batches(list(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id, family).items()}
            logits = model(**batch).logits.float()
            targets = torch.tensor([target[0] for _, target in chunk], device=device)
            if ModelFamily(family) is ModelFamily.SEQ2SEQ:
                first = logits[:, 0]
            else:
                # The answer's first token is predicted at the input's last position; a prompt
                # method prepends its virtual tokens, which shift every position by their count.
                offset = logits.shape[1] - batch["input_ids"].shape[1]
                positions = torch.tensor([offset + len(source) - 1 for source, _ in chunk], device=device)
                first = logits[torch.arange(len(chunk), device=device), positions]
            chosen = first.gather(1, targets[:, None])
            ranks += (first > chosen).sum(-1).tolist()
            probabilities += torch.softmax(first, -1).gather(1, targets[:, None])[:, 0].tolist()
    finally:
        model.train(was_training)
    ordered = sorted(ranks)
    return FirstTokenScores(rank_median=int(ordered[(len(ordered) - 1) // 2]),
                            top1_pct=100.0 * float(np.mean([r == 0 for r in ranks])),
                            probability_pct=100.0 * float(np.mean(probabilities)))
