"""LoRA (Hu et al., 2021) through peft: a rank-r update B·A beside each targeted linear layer.

B starts at zero, so the wrapped model computes exactly what the base model does until
the first step. Targets are module names of the backbone (q and v, as in the paper, in
params.yaml).
"""
from __future__ import annotations

from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.methods.base import MethodSpec, ParameterCounts
from cfqa.methods.options import LoraOptions
from cfqa.methods.t5_layout import check_module_names, require_t5, t5_linear_layers, t5_parameter_count
from cfqa.methods.peft_backed import peft_task_type


def build(model: PreTrainedModel, options: LoraOptions) -> nn.Module:
    if getattr(model.config, "model_type", None) == "t5":
        check_module_names(model.config, "lora", options.target_modules)
    return get_peft_model(model, LoraConfig(
        task_type=peft_task_type(model.config),
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
    ))


def closed_form_counts(config: PretrainedConfig, options: LoraOptions) -> ParameterCounts:
    require_t5(config, "lora")
    layers = t5_linear_layers(config)
    r = options.r
    trainable = sum(layers[name].count * r * (layers[name].in_features + layers[name].out_features)
                    for name in check_module_names(config, "lora", options.target_modules))
    return ParameterCounts(trainable=trainable, total=t5_parameter_count(config) + trainable)


SPEC = MethodSpec(
    name="lora",
    description="low-rank updates B·A beside the targeted linear layers (peft)",
    build=build,
    closed_form_counts=closed_form_counts,
)
