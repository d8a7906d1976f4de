"""Prompt tuning (Lester et al., 2021) through peft: learned embeddings prepended to the input.

Initialised from the embeddings of vocabulary tokens drawn with a fixed seed (peft's
SAMPLE_VOCAB under a seeded, forked RNG, so the global RNG is untouched). Lester et al.
found prompt tuning works best on an LM-adapted backbone: params.yaml gives its block
`backbone: lm_adapted`.

peft keeps num_transformer_submodules × num_virtual_tokens embeddings and defaults to two
for seq2seq models, but its seq2seq forward and generate only ever prepend the first
num_virtual_tokens (the encoder's); the decoder half would be trainable parameters that
no gradient reaches. We ask for one submodule, so the count is the method's own:
num_virtual_tokens × d_model.
"""
from __future__ import annotations

import torch
from peft import PromptTuningConfig, PromptTuningInit, get_peft_model
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.methods.base import MethodSpec, ParameterCounts
from cfqa.methods.options import PromptOptions
from cfqa.methods.t5_layout import require_t5, t5_parameter_count
from cfqa.methods.peft_backed import peft_task_type


def build(model: PreTrainedModel, options: PromptOptions) -> nn.Module:
    peft_config = PromptTuningConfig(
        task_type=peft_task_type(model.config),
        num_virtual_tokens=options.num_virtual_tokens,
        num_transformer_submodules=1,
        prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        return get_peft_model(model, peft_config)


def closed_form_counts(config: PretrainedConfig, options: PromptOptions) -> ParameterCounts:
    require_t5(config, "prompt")
    trainable = options.num_virtual_tokens * config.d_model
    return ParameterCounts(trainable=trainable, total=t5_parameter_count(config) + trainable)


SPEC = MethodSpec(
    name="prompt",
    description="learned input embeddings prepended to the encoder input (peft)",
    build=build,
    closed_form_counts=closed_form_counts,
)
