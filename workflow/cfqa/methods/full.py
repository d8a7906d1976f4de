"""Full fine-tuning: every weight trains."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.methods.base import MethodSpec, ParameterCounts, check_options


def build(model: PreTrainedModel, options: Mapping[str, Any]) -> nn.Module:
    check_options("full", options, {})
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def t5_parameter_count(config: PretrainedConfig) -> int:
    """Closed-form parameter count of T5ForConditionalGeneration (tied or untied head)."""
    d, f, h, k = config.d_model, config.d_ff, config.num_heads, config.d_kv
    inner = h * k
    attention = 4 * d * inner                       # q, k, v, o
    gated = getattr(config, "is_gated_act", False)
    feed_forward = (3 if gated else 2) * d * f     # wi (wi_0 + wi_1 if gated), wo
    bias = config.relative_attention_num_buckets * h  # only in each stack's first layer
    encoder_block = attention + feed_forward + 2 * d          # two layer norms
    decoder_block = 2 * attention + feed_forward + 3 * d      # self + cross, three norms
    embeddings = config.vocab_size * d
    head = 0 if config.tie_word_embeddings else config.vocab_size * d
    return (embeddings + head
            + config.num_layers * encoder_block + bias + d      # encoder final norm
            + config.num_decoder_layers * decoder_block + bias + d)


def closed_form_counts(config: PretrainedConfig, options: Mapping[str, Any]) -> ParameterCounts:
    total = t5_parameter_count(config)
    return ParameterCounts(trainable=total, total=total)


SPEC = MethodSpec(
    name="full",
    description="all weights",
    build=build,
    closed_form_counts=closed_form_counts,
)
