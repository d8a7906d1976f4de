"""LoRA (Hu et al., 2021) through peft: a rank-r update B·A beside each targeted linear layer.

B starts at zero, so the wrapped model computes exactly what the base model does until
the first step. Targets are module names of the backbone's linear layers, checked against
the architecture's layout (cfqa.methods.layouts): q and v on T5, as in the paper, in
params.yaml; q_proj, k_proj, v_proj, out_proj, c_fc, c_proj on GPT-Neo.
"""
from __future__ import annotations

from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.methods.base import MethodSpec, ParameterCounts
from cfqa.methods.options import LoraOptions
from cfqa.methods.layouts import check_module_names, layout_for
from cfqa.methods.peft_backed import peft_task_type


def build(model: PreTrainedModel, options: LoraOptions) -> nn.Module:
    # any peft-supported architecture trains; closed-form counts need a layout
    check_module_names(model.config, "lora", options.target_modules, require_layout=False)
    return get_peft_model(model, LoraConfig(
        task_type=peft_task_type(model.config),
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
    ))


def closed_form_counts(config: PretrainedConfig, options: LoraOptions) -> ParameterCounts:
    layout = layout_for(config, "lora")
    layers = layout.linear_layers(config)
    r = options.r
    trainable = sum(layers[name].count * r * (layers[name].in_features + layers[name].out_features)
                    for name in check_module_names(config, "lora", options.target_modules))
    return ParameterCounts(trainable=trainable, total=layout.parameter_count(config) + trainable)


SPEC = MethodSpec(
    name="lora",
    build=build,
    closed_form_counts=closed_form_counts,
)
