"""Full fine-tuning: every weight trains."""
from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.methods.base import MethodSpec, ParameterCounts
from cfqa.methods.options import FullOptions
from cfqa.methods.layouts import total_parameter_count


def build(model: PreTrainedModel, options: FullOptions) -> nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def closed_form_counts(config: PretrainedConfig, options: FullOptions) -> ParameterCounts:
    total = total_parameter_count(config, "full")
    return ParameterCounts(trainable=total, total=total)


SPEC = MethodSpec(
    name="full",
    build=build,
    closed_form_counts=closed_form_counts,
)
