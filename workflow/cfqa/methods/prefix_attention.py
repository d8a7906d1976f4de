"""Attention functions that prepend trainable prefix keys/values inside T5's attention.

transformers dispatches every T5 attention call through `AttentionInterface` by the name in
`config._attn_implementation`, and builds masks through `AttentionMaskInterface` by the same
name. This module registers two extra names, one wrapping the stock eager function and one
wrapping sdpa. A model only uses them after `set_attn_implementation(name)`, so models that
keep "eager" or "sdpa" in the same process are unaffected.

The prefix reaches the wrapper as the keyword `prefix_key_values`: a mapping from each
`T5Attention` module to `(source, layer)`, where `source.key_values(layer)` returns that layer's
prefix as one tensor `(2, num_heads, num_tokens, head_dim)` (keys, then values). A forward
pre-hook on the T5Stack puts the mapping into the stack's kwargs, which T5 passes down to the
attention function unchanged. The prefix is computed inside the attention call, so under
gradient checkpointing (reentrant or not) it is recomputed with the layer and its gradient
reaches the prefix parameters as leaves. A module missing from the mapping gets plain attention.

The prefix never enters the generation cache: cache lengths, the causal mask and `generate()`
stay those of the base model, and the wrapper prepends the prefix on every call. Prefix
positions get a zero relative-position bias (they have no position), are visible to every
query, and are never padding.
"""
from __future__ import annotations

from typing import Callable, Mapping, Protocol

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.models.t5.modeling_t5 import eager_attention_forward as t5_eager_attention_forward


class PrefixSource(Protocol):
    def key_values(self, layer: int) -> torch.Tensor: ...


PrefixMapping = Mapping[nn.Module, tuple[PrefixSource, int]]

# Registered name per base implementation the wrapper delegates to.
PREFIX_ATTENTION_NAMES = {"eager": "cfqa_prefix_eager", "sdpa": "cfqa_prefix_sdpa"}


def prefix_attention_name(base_implementation: str) -> str:
    if base_implementation not in PREFIX_ATTENTION_NAMES:
        raise ValueError(f"prefix tuning supports the attention implementations {sorted(PREFIX_ATTENTION_NAMES)}, "
                         f"not {base_implementation!r}")
    return PREFIX_ATTENTION_NAMES[base_implementation]


def base_implementation_of(name: str) -> str | None:
    """The stock implementation a registered prefix name wraps; None for any other name."""
    for base, registered in PREFIX_ATTENTION_NAMES.items():
        if registered == name:
            return base
    return None


def _prepend_columns(tensor: torch.Tensor, count: int, value: float | bool) -> torch.Tensor:
    """A new tensor with `count` constant columns before the last dimension (the input is shared
    by all layers and must not change)."""
    columns = torch.full((*tensor.shape[:-1], count), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([columns, tensor], dim=-1)


def with_prefix(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, position_bias: torch.Tensor | None,
                prefix: torch.Tensor):
    """Key, value, mask and position bias with the prefix's columns in front; `prefix` is
    (2, num_heads, num_tokens, head_dim)."""
    prefix_key, prefix_value = prefix[0], prefix[1]
    batch, num_tokens = key.shape[0], prefix_key.shape[-2]
    key = torch.cat([prefix_key.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([prefix_value.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
    if position_bias is not None:
        position_bias = _prepend_columns(position_bias, num_tokens, 0.0)
    if attention_mask is not None:
        visible = True if attention_mask.dtype == torch.bool else 0.0
        attention_mask = _prepend_columns(attention_mask, num_tokens, visible)
    elif getattr(module, "is_causal", False) and query.shape[2] > 1:
        # sdpa's `is_causal` aligns top-left, which is wrong once keys outnumber queries; the mask
        # functions registered below always materialize causal masks, so this is a wiring error.
        raise RuntimeError("prefix attention got no mask for a causal layer; the model's attention "
                           "implementation must be one of " + str(sorted(PREFIX_ATTENTION_NAMES.values())))
    return key, value, attention_mask, position_bias


def _wrap(base: Callable) -> Callable:
    def prefix_attention_forward(module, query, key, value, attention_mask, position_bias=None,
                                 prefix_key_values: PrefixMapping | None = None, **kwargs):
        entry = prefix_key_values.get(module) if prefix_key_values else None
        if entry is not None:
            source, layer = entry
            key, value, attention_mask, position_bias = with_prefix(
                module, query, key, value, attention_mask, position_bias, source.key_values(layer))
        return base(module, query, key, value, attention_mask, position_bias=position_bias, **kwargs)
    return prefix_attention_forward


def _materialized_sdpa_mask(**kwargs):
    # Never return None for a causal mask: a None mask lets sdpa fall back to `is_causal`, whose
    # top-left alignment (and key cropping) breaks once the prefix makes keys outnumber queries.
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(**kwargs)


def register() -> None:
    """Registers both names (idempotent; the interfaces are dictionaries)."""
    AttentionInterface.register(PREFIX_ATTENTION_NAMES["eager"], _wrap(t5_eager_attention_forward))
    AttentionMaskInterface.register(PREFIX_ATTENTION_NAMES["eager"], eager_mask)
    AttentionInterface.register(PREFIX_ATTENTION_NAMES["sdpa"], _wrap(sdpa_attention_forward))
    AttentionMaskInterface.register(PREFIX_ATTENTION_NAMES["sdpa"], _materialized_sdpa_mask)


register()
