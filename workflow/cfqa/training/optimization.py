"""Optimizer and learning-rate schedule, shared by pretraining and fine-tuning."""
from __future__ import annotations

from typing import Iterable

import torch
from transformers.optimization import Adafactor, get_linear_schedule_with_warmup


def make_optimizer(parameters: Iterable[torch.nn.Parameter], name: str, lr: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        raise ValueError("no trainable parameters: the method froze everything")
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adafactor":
        # Fixed learning rate (T5 fine-tuning recipe), not Adafactor's relative step size.
        return Adafactor(parameters, lr=lr, weight_decay=weight_decay, scale_parameter=False,
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
