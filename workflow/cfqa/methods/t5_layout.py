"""Where T5's weights sit: the linear layers by module name and the size of one block.

Methods that place weights inside T5 (LoRA, (IA)³, Houlsby adapters, last-layer tuning)
count their parameters in closed form from these facts instead of building a model; they
reach them through cfqa.methods.layouts, the per-architecture table.
`t5_parameter_count` is the whole model's count, built from the same block formulas.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Iterator

from torch import nn
from transformers import PretrainedConfig
from transformers.models.t5.modeling_t5 import T5LayerCrossAttention, T5LayerFF, T5LayerSelfAttention

from cfqa.methods.families import check_method_family
from cfqa.model.model_family import family_of

T5_MODEL_TYPES = ("t5",)


def require_t5(config: PretrainedConfig, method: str) -> None:
    """Methods whose placement follows T5's module layout refuse other architectures (a
    decoder-only model with the family's message first)."""
    check_method_family(method, family_of(config))
    model_type = getattr(config, "model_type", None)
    if model_type not in T5_MODEL_TYPES:
        raise ValueError(f"method {method!r} places weights by T5's module layout and supports "
                         f"model types {list(T5_MODEL_TYPES)}; got {model_type!r}")


@dataclass(frozen=True)
class LinearLayer:
    in_features: int
    out_features: int
    count: int          # how many modules of this name the whole model has


def t5_linear_layers(config: PretrainedConfig) -> dict[str, LinearLayer]:
    """Every bias-free linear layer of the encoder and decoder blocks, keyed by module name."""
    d, inner, f = config.d_model, config.num_heads * config.d_kv, config.d_ff
    attention_modules = config.num_layers + 2 * config.num_decoder_layers  # decoder: self + cross
    feed_forward_modules = config.num_layers + config.num_decoder_layers
    layers = {
        "q": LinearLayer(d, inner, attention_modules),
        "k": LinearLayer(d, inner, attention_modules),
        "v": LinearLayer(d, inner, attention_modules),
        "o": LinearLayer(inner, d, attention_modules),
        "wo": LinearLayer(f, d, feed_forward_modules),
    }
    if config.is_gated_act:
        layers["wi_0"] = LinearLayer(d, f, feed_forward_modules)
        layers["wi_1"] = LinearLayer(d, f, feed_forward_modules)
    else:
        layers["wi"] = LinearLayer(d, f, feed_forward_modules)
    return layers


def t5_sublayers(model: nn.Module) -> Iterator[tuple[nn.Module, nn.Module, str]]:
    """(sub-layer, its attention or feed-forward module, kind) for every sub-layer of the
    encoder and decoder blocks; kind is self_attention, cross_attention or feed_forward."""
    for stack in (model.encoder, model.decoder):
        for block in stack.block:
            for layer in block.layer:
                if isinstance(layer, T5LayerSelfAttention):
                    yield layer, layer.SelfAttention, "self_attention"
                elif isinstance(layer, T5LayerCrossAttention):
                    yield layer, layer.EncDecAttention, "cross_attention"
                elif isinstance(layer, T5LayerFF):
                    yield layer, layer.DenseReluDense, "feed_forward"
                else:
                    raise ValueError(f"unexpected T5 sub-layer {type(layer).__name__}")


def t5_attention_parameter_count(config: PretrainedConfig) -> int:
    return 4 * config.d_model * config.num_heads * config.d_kv     # q, k, v, o


def t5_decoder_block_parameter_count(config: PretrainedConfig) -> int:
    """One decoder block without the relative position bias (only block 0 owns that)."""
    feed_forward = (3 if config.is_gated_act else 2) * config.d_model * config.d_ff
    layer_norms = 3 * config.d_model                               # self, cross, feed-forward
    return 2 * t5_attention_parameter_count(config) + feed_forward + layer_norms


def t5_layer_norm_count(config: PretrainedConfig) -> int:
    """Layer norms in the model: two per encoder block, three per decoder block, one final per stack."""
    return 2 * config.num_layers + 3 * config.num_decoder_layers + 2


def t5_encoder_block_parameter_count(config: PretrainedConfig) -> int:
    """One encoder block: self-attention, feed-forward and their two layer norms."""
    feed_forward = (3 if config.is_gated_act else 2) * config.d_model * config.d_ff
    return t5_attention_parameter_count(config) + feed_forward + 2 * config.d_model


def t5_parameter_count(config: PretrainedConfig) -> int:
    """Closed-form parameter count of T5ForConditionalGeneration (tied or untied head)."""
    d = config.d_model
    bias = config.relative_attention_num_buckets * config.num_heads  # each stack's first layer
    head = 0 if config.tie_word_embeddings else config.vocab_size * d
    return (config.vocab_size * d + head
            + config.num_layers * t5_encoder_block_parameter_count(config) + bias + d      # + final norm
            + config.num_decoder_layers * t5_decoder_block_parameter_count(config) + bias + d)
