"""Optimizer and learning-rate schedule, shared by pretraining and fine-tuning."""
from __future__ import annotations

from typing import Iterable

import torch
from transformers.optimization import Adafactor, get_linear_schedule_with_warmup


def _is_matrix(parameter: torch.nn.Parameter) -> bool:
    return sum(size > 1 for size in parameter.shape) >= 2


def parameter_groups(parameters: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """The trainable parameters in optimizer groups: matrices (linear weights, embeddings,
    adapter and prompt tables) decay, vectors (biases, every norm's weight and bias) do not:
    decay would pull a norm's gain toward 0 instead of the 1 it starts at, and biases and
    gains only shift and scale activations (the nanoGPT rule; it needs no parameter names, so
    callers pass any iterable of parameters). A vector stored as a (d, 1) or (1, d) tensor,
    as peft stores (IA)^3's scaling vectors, is a vector. Without decay, one group."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters: the method froze everything")
    if weight_decay == 0:
        return [{"params": trainable, "weight_decay": 0.0}]
    groups = [{"params": [p for p in trainable if _is_matrix(p)], "weight_decay": weight_decay},
              {"params": [p for p in trainable if not _is_matrix(p)], "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def make_optimizer(parameters: Iterable[torch.nn.Parameter], name: str, lr: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """AdamW or Adafactor over the trainable `parameters`, weight decay on matrices only."""
    groups = parameter_groups(parameters, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "adafactor":
        # Fixed learning rate (T5 fine-tuning recipe), not Adafactor's relative step size.
        return Adafactor(groups, lr=lr, weight_decay=weight_decay, scale_parameter=False,
                         relative_step=False, warmup_init=False)
    raise ValueError(f"optimizer must be adamw or adafactor, got {name!r}")


def make_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    return get_linear_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, warmup_steps + 1))


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
