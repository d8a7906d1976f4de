"""(IA)³ (Liu et al., 2022) through peft: learned vectors that rescale the attention keys
and values and the inner activation of the feed-forward network.

On T5 that is k and v in every attention (encoder self, decoder self and cross) and the
input of each feed-forward `wo` (peft scales a feed-forward module's input, other modules'
outputs). On GPT-Neo (peft's own default there): k_proj and v_proj, and the input of c_proj.
The vectors start at one, so the model starts as the base model.
"""
from __future__ import annotations

from peft import IA3Config, get_peft_model
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.methods.base import MethodSpec, ParameterCounts
from cfqa.methods.options import IA3Options
from cfqa.methods.layouts import check_module_names, layout_for
from cfqa.methods.peft_backed import peft_task_type


def build(model: PreTrainedModel, options: IA3Options) -> nn.Module:
    # any peft-supported architecture trains; closed-form counts need a layout
    check_module_names(model.config, "ia3", options.target_modules, require_layout=False)
    return get_peft_model(model, IA3Config(
        task_type=peft_task_type(model.config),
        target_modules=list(options.target_modules),
        feedforward_modules=list(options.feedforward_modules),
    ))


def closed_form_counts(config: PretrainedConfig, options: IA3Options) -> ParameterCounts:
    layout = layout_for(config, "ia3")
    layers = layout.linear_layers(config)
    trainable = 0
    for name in check_module_names(config, "ia3", options.target_modules):
        layer = layers[name]
        # one scale per input feature for feed-forward modules, per output feature otherwise
        width = layer.in_features if name in options.feedforward_modules else layer.out_features
        trainable += layer.count * width
    return ParameterCounts(trainable=trainable, total=layout.parameter_count(config) + trainable)


SPEC = MethodSpec(
    name="ia3",
    build=build,
    closed_form_counts=closed_form_counts,
)
