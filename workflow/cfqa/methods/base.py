"""The one interface every fine-tuning method implements, and what all methods share:
parameter counting and saving/loading only the trainable weights (safetensors).

A method's `build(base_model, options)` takes a frozen-or-not pretrained model (any
transformers seq2seq or causal LM) and the method's typed options (cfqa.methods.options,
validated when the configuration loads) and returns a torch module whose parameters with
`requires_grad=True` are exactly the trainable ones. The returned module supports
`model(input_ids=..., attention_mask=..., labels=...)` (output with `.loss`) and
`model.generate(input_ids=..., attention_mask=..., max_new_tokens=..., num_beams=...)`
returning token ids as transformers' `generate` does.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.errors import BadInput
from cfqa.methods.options import METHOD_DESCRIPTIONS, MethodOptions


@dataclass(frozen=True)
class ParameterCounts:
    trainable: int
    total: int

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


@dataclass(frozen=True)
class MethodSpec:
    name: str
    build: Callable[[PreTrainedModel, MethodOptions], nn.Module]
    # Closed-form trainable and total parameter counts from the model config and options,
    # written out by hand per method; tests compare it with the built model.
    closed_form_counts: Callable[[PretrainedConfig, MethodOptions], ParameterCounts]
    # Turns a trained model into its inference form in place, outputs unchanged (e.g. prefix
    # tuning's reparameterization MLP folded into fixed keys/values); None: nothing to do.
    prepare_for_inference: Callable[[nn.Module], None] | None = None

    @property
    def description(self) -> str:
        """What the method trains, from the light registry (the report's glossary reads it there
        without importing torch)."""
        return METHOD_DESCRIPTIONS[self.name]


class OptionsError(BadInput, ValueError):
    """Options that are valid on their own but do not fit the model they are applied to."""


def freeze(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


@contextlib.contextmanager
def initialisation_rng(seed: int | None) -> Iterator[None]:
    """The random stream a method draws its new weights from. None: the caller's stream, which
    `cfqa.training.backbone.build_method_model` seeds with the run seed, so each run seed gets its own
    initialisation. An integer: a stream fixed by that seed (forked: the caller's stream is left
    as it was), the same initialisation in every run."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def count_parameters(model: nn.Module) -> ParameterCounts:
    """Unique parameters (tied weights counted once)."""
    trainable = total = 0
    for parameter in model.parameters():  # parameters() already de-duplicates shared tensors
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return ParameterCounts(trainable=trainable, total=total)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def save_trainable(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> int:
    """Writes only the trainable weights as safetensors; returns the file's size in bytes.

    `metadata` is stored as one sorted JSON string under the key "cfqa": safetensors writes
    its metadata map in hash order, random per process, so several keys would make the
    same weights hash differently from run to run."""
    tensors = {name: t.to("cpu").contiguous().clone() for name, t in trainable_state_dict(model).items()}
    header = {"cfqa": json.dumps(dict(metadata), sort_keys=True)} if metadata else None
    save_file(tensors, str(path), metadata=header)
    return Path(path).stat().st_size


def load_trainable(model: nn.Module, path: str | Path) -> None:
    """Loads weights saved by `save_trainable`; every trainable tensor must be in the file."""
    tensors = load_file(str(path))
    expected = set(trainable_state_dict(model))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(f"{path}: trainable weights do not match the model "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            parameters[name].copy_(tensor.to(parameters[name].dtype))
