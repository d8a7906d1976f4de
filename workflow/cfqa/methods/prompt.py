"""Prompt tuning (Lester et al., 2021) through peft: learned embeddings prepended to the input.

Initialised from the embeddings of vocabulary tokens (peft's SAMPLE_VOCAB) drawn from the run's
random stream (option `seed: null`, so every run seed draws other tokens) or from a stream fixed
by the option `seed` (the same tokens in every run). Lester et al.
found prompt tuning works best on an LM-adapted backbone: params.yaml gives its block
`backbone: lm_adapted`.

peft keeps num_transformer_submodules × num_virtual_tokens embeddings and defaults to two
for seq2seq models, but its seq2seq forward and generate only ever prepend the first
num_virtual_tokens (the encoder's); the decoder half would be trainable parameters that
no gradient reaches. We ask for one submodule, so the count is the method's own:
num_virtual_tokens × d_model.

On a decoder-only LM the prompt precedes the input ids (and the answer, in training). peft
0.21.2 drops `position_ids` for prompt learning, and a model without them numbers positions
0, 1, 2, ... whatever the attention mask says: a left-padded row in batched generation would
read its tokens at positions shifted by its padding, unlike training (right padding) and
unlike the same prompt generated alone. A forward pre-hook on the backbone therefore numbers
positions from the attention mask, as transformers' generate does for models it drives
itself (identical to 0, 1, 2, ... wherever there is no left padding).
"""
from __future__ import annotations

import torch
from peft import PromptTuningConfig, PromptTuningInit, get_peft_model
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.methods.base import MethodSpec, ParameterCounts, initialisation_rng
from cfqa.methods.options import PromptOptions
from cfqa.methods.families import check_method_family
from cfqa.methods.layouts import layout_for
from cfqa.model.model_family import ModelFamily, family_of
from cfqa.methods.peft_backed import peft_task_type


def build(model: PreTrainedModel, options: PromptOptions) -> nn.Module:
    check_method_family("prompt", family_of(model.config))   # peft sizes the prompt from the config
    peft_config = PromptTuningConfig(
        task_type=peft_task_type(model.config),
        num_virtual_tokens=options.num_virtual_tokens,
        num_transformer_submodules=1,
        prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB,
    )
    if family_of(model.config) is ModelFamily.CAUSAL:
        model.base_model.register_forward_pre_hook(positions_from_attention_mask, with_kwargs=True)
    with initialisation_rng(options.seed):
        return get_peft_model(model, peft_config)


def positions_from_attention_mask(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Fills in position_ids (when none are given) from the 2-D attention mask over the
    cached and the current positions: each real token's index among its row's real tokens."""
    mask = kwargs.get("attention_mask")
    if kwargs.get("position_ids") is not None or mask is None or mask.dim() != 2:
        return args, kwargs
    current = kwargs.get("inputs_embeds")
    current = current if current is not None else (args[0] if args else kwargs.get("input_ids"))
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return args, {**kwargs, "position_ids": positions[:, -current.shape[1]:]}


def closed_form_counts(config: PretrainedConfig, options: PromptOptions) -> ParameterCounts:
    layout = layout_for(config, "prompt")
    trainable = options.num_virtual_tokens * layout.width(config)
    return ParameterCounts(trainable=trainable, total=layout.parameter_count(config) + trainable)


SPEC = MethodSpec(
    name="prompt",
    build=build,
    closed_form_counts=closed_form_counts,
)
