"""Last-layer tuning ("traditional" fine-tuning of the output layers): only the top
`num_blocks` blocks under the output head, the final layer norm and the head train. The
blocks and the norm come from the architecture's layout (cfqa.methods.layouts): T5's decoder
blocks and decoder final norm; GPT-Neo's transformer blocks and ln_f.

Decoder only: the head reads the decoder's last hidden state, so the blocks just below it
are "the last layers". The last encoder block is not: its output feeds the cross-attention
of every decoder layer, so training it would change what all the frozen layers see.

The head: T5 ties `lm_head` to the input embedding (transformers 5 forces
`tie_word_embeddings=True` in T5Config), and GPT-Neo ties it by default, so training the tied
head would also move the input embeddings. The head is therefore replaced by an untied,
trainable copy of the same weights; the embeddings stay frozen. T5's d_model**-0.5
scaling of the decoder output (`config.scale_decoder_outputs`) is applied in the model's
forward before the head, so the copy computes the same logits as the base at the start.
A checkpoint whose head is already untied keeps its own head, made trainable.
Do not call `tie_weights()` on the built model: it would tie the copy back.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from cfqa.methods.base import MethodSpec, OptionsError, ParameterCounts, freeze
from cfqa.methods.options import LastLayerOptions
from cfqa.methods.layouts import Layout, layout_for
from cfqa.model.model_family import ModelFamily


def _num_blocks(config: PretrainedConfig, layout: Layout, options: LastLayerOptions) -> int:
    depth = layout.top_depth(config)
    if options.num_blocks > depth:
        stack = "decoder's" if layout.family is ModelFamily.SEQ2SEQ else "model's"
        raise OptionsError(f"method 'last_layer': num_blocks {options.num_blocks} exceeds the {stack} "
                           f"{depth} layers")
    return options.num_blocks


def untied_head(model: PreTrainedModel) -> nn.Linear:
    """The output head as its own module: a copy when it shares the input embedding's weight."""
    head = model.get_output_embeddings()
    if head.weight is not model.get_input_embeddings().weight:
        return head
    weight = head.weight.detach()
    copy = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        copy.weight.copy_(weight)
    return copy


def build(model: PreTrainedModel, options: LastLayerOptions) -> nn.Module:
    layout = layout_for(model.config, "last_layer")
    blocks = _num_blocks(model.config, layout, options)
    freeze(model)
    head = untied_head(model)
    model.set_output_embeddings(head)
    for module in (*layout.top_blocks(model)[-blocks:], layout.final_norm(model), head):
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    return model


def closed_form_counts(config: PretrainedConfig, options: LastLayerOptions) -> ParameterCounts:
    layout = layout_for(config, "last_layer")
    blocks = _num_blocks(config, layout, options)
    head = config.vocab_size * layout.width(config)
    # parameter_count counts a separate head only for an untied config; the copy adds one otherwise
    total = layout.parameter_count(config) + (head if config.tie_word_embeddings else 0)
    first_block = layout.first_block_extra(config) if blocks == layout.top_depth(config) else 0
    trainable = (blocks * layout.top_block_parameter_count(config) + first_block
                 + layout.final_norm_parameter_count(config) + head)
    return ParameterCounts(trainable=trainable, total=total)


SPEC = MethodSpec(
    name="last_layer",
    build=build,
    closed_form_counts=closed_form_counts,
)
