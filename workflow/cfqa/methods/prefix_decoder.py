"""Prefix tuning as peft implements it (PrefixTuningConfig), kept beside the in-house `prefix`.

Limitation, documented rather than fixed: on an encoder-decoder model peft passes the
prefix as `past_key_values`, which only the decoder reads. With transformers 5 on T5 the
encoder output is the base model's, and the cross-attention part of the cache is
replaced, so only decoder self-attention gets the prefix (measured: the encoder output is
bit-identical to the base model's and the cross-attention cache is empty). Li & Liang's
prefix tuning also prefixes the encoder and cross-attention: the in-house `prefix` method
does that. Not usable with gradient checkpointing: under it T5Block drops
`past_key_values`, so the prefix is lost and the attention mask no longer fits (a shape
error in the first checkpointed block).

On T5 the prefix is sized from the model, not from peft's guesses: one key/value pair
per decoder layer (peft would use the encoder's layer count) and heads × d_kv wide (peft
would assume d_model / heads, wrong for t5-3b and t5-11b).
`reparameterize` switches on peft's reparameterisation MLP (embedding → Linear → tanh →
Linear, `mlp_hidden_size` wide); off (peft's default) trains the key/value table directly.
Option names follow the in-house `prefix` so the two can be configured alike.
On a decoder-only LM (GPT-Neo) this is plain prefix tuning of every layer's self-attention,
sized by peft from the config (one key/value pair per layer, hidden_size wide).
"""
from __future__ import annotations

from peft import PrefixTuningConfig, get_peft_model
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.methods.base import MethodSpec, ParameterCounts
from cfqa.methods.options import PrefixDecoderOptions
from cfqa.methods.families import check_method_family
from cfqa.methods.layouts import layout_for
from cfqa.model.model_family import family_of
from cfqa.methods.peft_backed import peft_task_type


def _t5_geometry(config: PretrainedConfig) -> dict:
    if getattr(config, "model_type", None) != "t5":
        return {}   # peft reads the geometry from the config
    return {"num_layers": config.num_decoder_layers,
            "token_dim": config.num_heads * config.d_kv,
            "num_attention_heads": config.num_heads}


def build(model: PreTrainedModel, options: PrefixDecoderOptions) -> nn.Module:
    check_method_family("prefix_decoder", family_of(model.config))   # peft sizes the prefix from the config
    return get_peft_model(model, PrefixTuningConfig(
        task_type=peft_task_type(model.config),
        num_virtual_tokens=options.num_virtual_tokens,
        prefix_projection=options.reparameterize,
        encoder_hidden_size=options.mlp_hidden_size,
        **_t5_geometry(model.config),
    ))


def closed_form_counts(config: PretrainedConfig, options: PrefixDecoderOptions) -> ParameterCounts:
    layout = layout_for(config, "prefix_decoder")
    tokens, hidden = options.num_virtual_tokens, options.mlp_hidden_size
    inner = layout.attention_width(config)
    key_values = layout.top_depth(config) * 2 * inner           # one key and one value per layer
    if not options.reparameterize:
        trainable = tokens * key_values
    else:
        trainable = (tokens * inner                                # virtual token embeddings
                     + inner * hidden + hidden                     # first linear with bias
                     + hidden * key_values + key_values)           # second linear with bias
    return ParameterCounts(trainable=trainable, total=layout.parameter_count(config) + trainable)


SPEC = MethodSpec(
    name="prefix_decoder",
    build=build,
    closed_form_counts=closed_form_counts,
)
