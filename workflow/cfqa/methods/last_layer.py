"""Last-layer tuning: only the top `num_blocks` decoder blocks, the decoder's final layer
norm and the output head train.

Decoder only: the head reads the decoder's last hidden state, so the blocks just below it
are "the last layers". The last encoder block is not: its output feeds the cross-attention
of every decoder layer, so training it would change what all the frozen layers see.

The head: T5 ties `lm_head` to the input embedding (transformers 5 forces
`tie_word_embeddings=True` in T5Config), so training the tied head would also move the
input embeddings of encoder and decoder. The head is therefore replaced by an untied,
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
from cfqa.methods.t5_layout import require_t5, t5_decoder_block_parameter_count, t5_parameter_count


def _num_blocks(config: PretrainedConfig, options: LastLayerOptions) -> int:
    if options.num_blocks > config.num_decoder_layers:
        raise OptionsError(f"method 'last_layer': num_blocks {options.num_blocks} exceeds the decoder's "
                           f"{config.num_decoder_layers} layers")
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
    require_t5(model.config, "last_layer")
    blocks = _num_blocks(model.config, options)
    freeze(model)
    head = untied_head(model)
    model.set_output_embeddings(head)
    for module in (*model.decoder.block[-blocks:], model.decoder.final_layer_norm, head):
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    return model


def closed_form_counts(config: PretrainedConfig, options: LastLayerOptions) -> ParameterCounts:
    require_t5(config, "last_layer")
    blocks = _num_blocks(config, options)
    head = config.vocab_size * config.d_model
    # t5_parameter_count counts a separate head only for an untied config; the copy adds one otherwise
    total = t5_parameter_count(config) + (head if config.tie_word_embeddings else 0)
    relative_bias = (config.relative_attention_num_buckets * config.num_heads
                     if blocks == config.num_decoder_layers else 0)   # owned by decoder block 0
    trainable = blocks * t5_decoder_block_parameter_count(config) + relative_bias + config.d_model + head
    return ParameterCounts(trainable=trainable, total=total)


SPEC = MethodSpec(
    name="last_layer",
    description="top decoder block(s), final decoder norm and an untied output head",
    build=build,
    closed_form_counts=closed_form_counts,
)
