"""Prefix tuning as in Li & Liang (2021) for T5: trainable key/value prefixes in the encoder's
self-attention, the decoder's self-attention and the decoder's cross-attention.

Written in-house because peft 0.21.2's prefix tuning on T5 only reaches the decoder's
self-attention (through `past_key_values`): the encoder never sees a prefix and the
cross-attention cache is replaced by an empty one. Plain torch modules, no change to T5's
code: a forward pre-hook on each T5Stack tells the attention calls which prefix is theirs, and
the attention function computes and prepends it (see `prefix_attention`).

Each attention site has its own prefix. During training it is reparameterized as in the paper:
a small matrix of `num_virtual_tokens` rows (width d_model) goes through an MLP
(Linear → tanh → Linear) to every layer's keys and values. Each attention call evaluates only
its layer's slice, so gradient checkpointing recomputes it with the layer. `merge_prefix_mlp`
replaces the MLP by the fixed keys/values it produces, for inference. With
`reparameterize: false` the keys and values are trained directly (initialized from the same
seeded MLP's output).

Prefix positions get a zero relative-position bias and never enter the generation cache.

Options (cfqa.methods.options.PrefixOptions; values in params.yaml): num_virtual_tokens,
reparameterize, mlp_hidden_size, seed (null: from the run seed, see `initialisation_rng`), sites
(a subset of encoder_self, decoder_self, decoder_cross).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, T5ForConditionalGeneration

from cfqa.methods import prefix_attention
from cfqa.methods.base import MethodSpec, OptionsError, ParameterCounts, freeze, initialisation_rng
from cfqa.methods.families import check_method_family
from cfqa.model.model_family import family_of
from cfqa.methods.options import PREFIX_SITES, PrefixOptions
from cfqa.methods.t5_layout import t5_parameter_count

# The submodule added to the model; trainable parameter names start with it.
PREFIX_ATTRIBUTE = "prefix_tuning"


class PrefixMLP(nn.Module):
    """Reparameterized prefix of one attention site: the rows of a small matrix go through an
    MLP to every layer's keys and values."""

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, num_tokens: int,
                 d_model: int, hidden_size: int):
        super().__init__()
        self.num_layers, self.num_heads, self.head_dim = num_layers, num_heads, head_dim
        self.embedding = nn.Parameter(torch.randn(num_tokens, d_model))
        self.mlp_in = nn.Linear(d_model, hidden_size)
        self.mlp_out = nn.Linear(hidden_size, num_layers * 2 * num_heads * head_dim)

    def key_values(self, layer: int | None = None) -> torch.Tensor:
        """One layer's prefix (2, num_heads, num_tokens, head_dim), keys then values; all layers
        (num_layers, 2, num_heads, num_tokens, head_dim) when `layer` is None. One layer uses
        only its rows of the output projection."""
        hidden = torch.tanh(self.mlp_in(self.embedding))
        num_tokens = hidden.shape[0]
        if layer is None:
            rows = slice(None)
            shape = (num_tokens, self.num_layers, 2, self.num_heads, self.head_dim)
        else:
            width = 2 * self.num_heads * self.head_dim
            rows = slice(layer * width, (layer + 1) * width)
            shape = (num_tokens, 1, 2, self.num_heads, self.head_dim)
        projected = nn.functional.linear(hidden, self.mlp_out.weight[rows], self.mlp_out.bias[rows])
        key_values = projected.view(shape).permute(1, 2, 3, 0, 4)
        return key_values if layer is None else key_values[0]


class PrefixTable(nn.Module):
    """Keys and values of one attention site held directly (trained without reparameterization,
    or merged from a PrefixMLP): (num_layers, 2, num_heads, num_tokens, head_dim)."""

    def __init__(self, key_values: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(key_values)

    def key_values(self, layer: int | None = None) -> torch.Tensor:
        return self.table if layer is None else self.table[layer]


class T5Prefixes(nn.Module):
    """The prefixes of every attention site, and the hook that hands them to the attention."""

    def __init__(self, sites: nn.ModuleDict):
        super().__init__()
        self.sites = sites

    @staticmethod
    def _attention_modules(stack: nn.Module) -> dict[str, list[nn.Module]]:
        if stack.is_decoder:
            return {"decoder_self": [block.layer[0].SelfAttention for block in stack.block],
                    "decoder_cross": [block.layer[1].EncDecAttention for block in stack.block]}
        return {"encoder_self": [block.layer[0].SelfAttention for block in stack.block]}

    def stack_pre_hook(self, stack: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Tells each attention module of this stack where its prefix comes from. A hook per stack,
        because generate() calls the encoder on its own."""
        if prefix_attention.base_implementation_of(stack.config._attn_implementation) is None:
            raise RuntimeError(f"prefix tuning needs the attention implementation set by its build, one of "
                               f"{sorted(prefix_attention.PREFIX_ATTENTION_NAMES.values())}; the model uses "
                               f"{stack.config._attn_implementation!r} (was set_attn_implementation called after build?)")
        mapping = {module: (self.sites[site], layer)
                   for site, modules in self._attention_modules(stack).items() if site in self.sites
                   for layer, module in enumerate(modules)}
        return args, {**kwargs, "prefix_key_values": mapping}


def _site_layers(config: PretrainedConfig) -> dict[str, int]:
    return {"encoder_self": config.num_layers, "decoder_self": config.num_decoder_layers,
            "decoder_cross": config.num_decoder_layers}


def build(model: PreTrainedModel, options: PrefixOptions) -> nn.Module:
    """Freezes `model`, adds the prefixes as `model.prefix_tuning`, switches its attention to the
    prefix-aware version of its current implementation (eager or sdpa) and returns it."""
    check_method_family("prefix", family_of(model.config))
    if not isinstance(model, T5ForConditionalGeneration):
        raise OptionsError(f"method 'prefix' needs a T5ForConditionalGeneration, got {type(model).__name__}")
    if hasattr(model, PREFIX_ATTRIBUTE):
        raise OptionsError("method 'prefix': the model already has prefixes")
    config = model.config
    attention_name = prefix_attention.prefix_attention_name(config._attn_implementation)
    freeze(model)
    layers = _site_layers(config)
    with initialisation_rng(options.seed):
        sites = nn.ModuleDict({
            site: PrefixMLP(layers[site], config.num_heads, config.d_kv, options.num_virtual_tokens,
                            config.d_model, options.mlp_hidden_size)
            for site in PREFIX_SITES if site in options.sites})
    prefixes = T5Prefixes(sites).to(model.device)
    if not options.reparameterize:
        _merge(prefixes)
    setattr(model, PREFIX_ATTRIBUTE, prefixes)
    model.set_attn_implementation(attention_name)
    for stack in (model.encoder, model.decoder):
        stack.register_forward_pre_hook(prefixes.stack_pre_hook, with_kwargs=True)
    return model


def _merge(prefixes: T5Prefixes) -> None:
    for site, prefix in list(prefixes.sites.items()):
        if isinstance(prefix, PrefixMLP):
            trainable = prefix.embedding.requires_grad
            with torch.no_grad():
                table = PrefixTable(prefix.key_values().contiguous())
            table.table.requires_grad_(trainable)
            prefixes.sites[site] = table


def merge_prefix_mlp(model: nn.Module) -> None:
    """Replaces each reparameterization MLP by the fixed keys/values it produces (for inference;
    the outputs do not change). The merged weights have the layout of `reparameterize: false`,
    so they load into a model built with that option."""
    prefixes = getattr(model, PREFIX_ATTRIBUTE, None)
    if not isinstance(prefixes, T5Prefixes):
        raise ValueError("merge_prefix_mlp: the model was not built by method 'prefix'")
    _merge(prefixes)


def closed_form_counts(config: PretrainedConfig, options: PrefixOptions) -> ParameterCounts:
    check_method_family("prefix", family_of(config))
    tokens, hidden, d_model = options.num_virtual_tokens, options.mlp_hidden_size, config.d_model
    inner = config.num_heads * config.d_kv
    trainable = 0
    for site, num_layers in _site_layers(config).items():
        if site not in options.sites:
            continue
        key_values = num_layers * 2 * inner               # every layer's keys and values, per prefix row
        if options.reparameterize:
            trainable += (tokens * d_model                  # the small matrix
                          + d_model * hidden + hidden       # first linear
                          + hidden * key_values + key_values)  # second linear
        else:
            trainable += tokens * key_values
    return ParameterCounts(trainable=trainable, total=t5_parameter_count(config) + trainable)


SPEC = MethodSpec(
    name="prefix",
    build=build,
    closed_form_counts=closed_form_counts,
    prepare_for_inference=merge_prefix_mlp,
)
