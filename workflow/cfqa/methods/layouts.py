"""Where each supported architecture keeps the weights methods place themselves by: one entry
per transformers model type (as peft keeps its per-model-type target-module tables).

An entry names the linear layers (for LoRA and (IA)³ targets and their closed-form counts),
the blocks next to the output head and the final norm (for last-layer tuning), the sub-layers
whose outputs adapters rewrite, the widths prompt and prefix tuning size themselves by, and
the whole model's closed-form parameter count. Methods read these instead of T5 module paths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from torch import nn
from transformers import PretrainedConfig

from cfqa.methods.families import check_method_family
from cfqa.methods.gpt_neo_layout import (gpt_neo_block_parameter_count, gpt_neo_layer_norm_count,
                                         gpt_neo_linear_layers, gpt_neo_parameter_count, gpt_neo_sublayers)
from cfqa.methods.t5_layout import (LinearLayer, t5_decoder_block_parameter_count, t5_layer_norm_count,
                                    t5_linear_layers, t5_parameter_count, t5_sublayers)
from cfqa.model.model_family import ModelFamily, family_of


@dataclass(frozen=True)
class Layout:
    name: str                                                     # for messages
    family: ModelFamily
    linear_layers: Callable[[PretrainedConfig], dict[str, LinearLayer]]
    parameter_count: Callable[[PretrainedConfig], int]
    width: Callable[[PretrainedConfig], int]                      # the residual stream (d_model)
    attention_width: Callable[[PretrainedConfig], int]            # heads x head width
    num_heads: Callable[[PretrainedConfig], int]
    top_depth: Callable[[PretrainedConfig], int]                  # blocks of the stack under the head
    top_blocks: Callable[[nn.Module], nn.ModuleList]
    top_block_parameter_count: Callable[[PretrainedConfig], int]
    # parameters owned by the first block of that stack only (T5's relative position bias)
    first_block_extra: Callable[[PretrainedConfig], int]
    final_norm: Callable[[nn.Module], nn.Module]                  # the norm between the top block and the head
    final_norm_parameter_count: Callable[[PretrainedConfig], int]
    layer_norm_count: Callable[[PretrainedConfig], int]           # every norm of the model
    layer_norm_has_bias: bool
    # (module an adapter attaches to, module whose output it rewrites, kind) per sub-layer;
    # kind: self_attention | cross_attention | feed_forward
    sublayers: Callable[[nn.Module], Iterator[tuple[nn.Module, nn.Module, str]]]
    describe: Callable[[PretrainedConfig], str] = lambda config: ""   # what makes its layer names vary


T5 = Layout(
    name="T5", family=ModelFamily.SEQ2SEQ,
    linear_layers=t5_linear_layers, parameter_count=t5_parameter_count,
    width=lambda c: c.d_model, attention_width=lambda c: c.num_heads * c.d_kv, num_heads=lambda c: c.num_heads,
    top_depth=lambda c: c.num_decoder_layers, top_blocks=lambda m: m.decoder.block,
    top_block_parameter_count=t5_decoder_block_parameter_count,
    first_block_extra=lambda c: c.relative_attention_num_buckets * c.num_heads,
    final_norm=lambda m: m.decoder.final_layer_norm, final_norm_parameter_count=lambda c: c.d_model,
    layer_norm_count=t5_layer_norm_count, layer_norm_has_bias=False, sublayers=t5_sublayers,
    describe=lambda c: f"feed_forward_proj={c.feed_forward_proj!r}",
)

GPT_NEO = Layout(
    name="GPT-Neo", family=ModelFamily.CAUSAL,
    linear_layers=gpt_neo_linear_layers, parameter_count=gpt_neo_parameter_count,
    width=lambda c: c.hidden_size, attention_width=lambda c: c.hidden_size, num_heads=lambda c: c.num_heads,
    top_depth=lambda c: c.num_layers, top_blocks=lambda m: m.transformer.h,
    top_block_parameter_count=gpt_neo_block_parameter_count,
    first_block_extra=lambda c: 0,
    final_norm=lambda m: m.transformer.ln_f, final_norm_parameter_count=lambda c: 2 * c.hidden_size,
    layer_norm_count=gpt_neo_layer_norm_count, layer_norm_has_bias=True, sublayers=gpt_neo_sublayers,
)

# transformers model_type -> layout
LAYOUTS: dict[str, Layout] = {"t5": T5, "gpt_neo": GPT_NEO}


def layout_for(config: PretrainedConfig, method: str) -> Layout:
    """The layout of `config`'s architecture, after checking `method` applies to its family."""
    check_method_family(method, family_of(config))
    model_type = getattr(config, "model_type", None)
    layout = LAYOUTS.get(model_type)
    if layout is None:
        known = ", ".join(f"{key} ({entry.name})" for key, entry in LAYOUTS.items())
        raise ValueError(f"method {method!r} places weights by a per-architecture layout and has none for "
                         f"model type {model_type!r}; layouts exist for: {known}")
    return layout


def check_module_names(config: PretrainedConfig, method: str, names, *, require_layout: bool = True) -> list[str]:
    """The target module names as a list; each must be a linear layer of this architecture.
    With require_layout=False an architecture without a layout passes the names on unchecked
    (peft then matches them against the model's modules and fails when none match)."""
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"method {method!r}: target modules must be a list of module names, got {names!r}")
    if not require_layout and getattr(config, "model_type", None) not in LAYOUTS:
        check_method_family(method, family_of(config))
        return list(names)
    layout = layout_for(config, method)
    available = layout.linear_layers(config)
    unknown = sorted(set(names) - set(available))
    if unknown:
        detail = layout.describe(config)
        raise ValueError(f"method {method!r}: {unknown} are not linear layers of this {layout.name}"
                         f"{f' ({detail})' if detail else ''}; choose from {sorted(available)}")
    return list(names)


def total_parameter_count(config: PretrainedConfig, method: str) -> int:
    return layout_for(config, method).parameter_count(config)
