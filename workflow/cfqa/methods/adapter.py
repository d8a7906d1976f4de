"""Houlsby bottleneck adapters (Houlsby et al., 2019) in every T5 or GPT-Neo block.

An adapter (down-projection, ReLU, up-projection, with its own skip connection) rewrites
the output of every sub-layer before T5 adds the sub-layer's residual: after each
attention and after each feed-forward network, in encoder and decoder. Houlsby places one
after each sub-layer; a T5 decoder block has three, and the cross-attention one is switched
by `cross_attention` (on in params.yaml: it is where the decoder reads the context). As in
the paper, the layer norms can train too (`train_layer_norms`). The bottleneck is
d_model // reduction_factor wide. The up-projection starts at zero, so the adapted model
computes exactly what the base model does until the first step.

Written in-house as plain torch modules: AdapterHub's `adapters` package pins
transformers 4.x and cannot be installed beside transformers 5. The adapters attach as
child modules of T5's sub-layers and act through forward hooks on the attention and
feed-forward modules, so T5's code is not copied and the base weights keep their names.

On GPT-Neo (decoder-only) each block gets two: after the attention (the output of `attn`,
before the residual add) and after the MLP. There is no cross-attention, so
`cross_attention` has no effect there; `train_layer_norms` trains ln_1, ln_2 and ln_f,
weights and biases.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.models.t5.modeling_t5 import T5LayerNorm

from cfqa.methods.base import MethodSpec, OptionsError, ParameterCounts, freeze
from cfqa.methods.options import AdapterOptions
from cfqa.methods.layouts import Layout, layout_for
from cfqa.model.model_family import ModelFamily


class BottleneckAdapter(nn.Module):
    """x + up(relu(down(x))); zero-initialised `up` makes it the identity at the start."""

    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.up(torch.relu(self.down(hidden_states)))

    def rewrite_output(self, module: nn.Module, args, output):
        """Forward hook: T5's attention returns a tuple whose first item is the output."""
        if isinstance(output, tuple):
            return (self(output[0]), *output[1:])
        return self(output)


def _bottleneck(config: PretrainedConfig, layout: Layout, options: AdapterOptions) -> int:
    width = layout.width(config)
    if options.reduction_factor > width:
        raise OptionsError(f"method 'adapter': reduction_factor {options.reduction_factor} exceeds "
                           f"d_model={width}")
    return width // options.reduction_factor


def _adapted_sublayers(model: PreTrainedModel, layout: Layout, cross_attention: bool):
    """(module the adapter attaches to, module whose output it rewrites) for every position."""
    for attach, rewritten, kind in layout.sublayers(model):
        if kind != "cross_attention" or cross_attention:
            yield attach, rewritten


def build(model: PreTrainedModel, options: AdapterOptions) -> nn.Module:
    layout = layout_for(model.config, "adapter")
    bottleneck = _bottleneck(model.config, layout, options)
    freeze(model)
    reference = model.get_input_embeddings().weight
    for layer, inner in _adapted_sublayers(model, layout, options.cross_attention):
        adapter = BottleneckAdapter(layout.width(model.config), bottleneck).to(reference.device, reference.dtype)
        layer.add_module("adapter", adapter)
        # a bound method: a deep copy of the model rebinds the hook to the copied adapter
        inner.register_forward_hook(adapter.rewrite_output)
    if options.train_layer_norms:
        for module in model.modules():
            if isinstance(module, (T5LayerNorm, nn.LayerNorm)):
                for parameter in module.parameters():     # weight, and bias where the norm has one
                    parameter.requires_grad_(True)
    return model


def closed_form_counts(config: PretrainedConfig, options: AdapterOptions) -> ParameterCounts:
    layout = layout_for(config, "adapter")
    bottleneck = _bottleneck(config, layout, options)
    d = layout.width(config)
    per_adapter = 2 * d * bottleneck + bottleneck + d          # down and up, each with a bias
    if layout.family is ModelFamily.CAUSAL:
        adapters = 2 * layout.top_depth(config)                # attention and MLP of every block
    else:
        per_decoder_block = 3 if options.cross_attention else 2    # self, cross, feed-forward
        adapters = 2 * config.num_layers + per_decoder_block * config.num_decoder_layers
    trainable = adapters * per_adapter
    if options.train_layer_norms:
        trainable += layout.layer_norm_count(config) * d * (2 if layout.layer_norm_has_bias else 1)
    total = layout.parameter_count(config) + adapters * per_adapter
    return ParameterCounts(trainable=trainable, total=total)


SPEC = MethodSpec(
    name="adapter",
    build=build,
    closed_form_counts=closed_form_counts,
)
