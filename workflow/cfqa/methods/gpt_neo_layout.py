"""Where GPT-Neo's weights sit (transformers' GPTNeoForCausalLM): the linear layers by module
name, the size of one block and of the whole model, for closed-form parameter counts.

A block: ln_1, attention (q_proj, k_proj, v_proj without bias; out_proj with bias), ln_2,
MLP (c_fc, c_proj with biases); LayerNorms have weight and bias. Learned absolute position
embeddings (wpe); the head is tied to the input embedding unless the config says otherwise.
"""
from __future__ import annotations

from typing import Iterator

from torch import nn
from transformers import PretrainedConfig

from cfqa.methods.t5_layout import LinearLayer


def gpt_neo_inner_width(config: PretrainedConfig) -> int:
    return config.intermediate_size if config.intermediate_size is not None else 4 * config.hidden_size


def gpt_neo_linear_layers(config: PretrainedConfig) -> dict[str, LinearLayer]:
    d, f, layers = config.hidden_size, gpt_neo_inner_width(config), config.num_layers
    return {
        "q_proj": LinearLayer(d, d, layers),
        "k_proj": LinearLayer(d, d, layers),
        "v_proj": LinearLayer(d, d, layers),
        "out_proj": LinearLayer(d, d, layers),
        "c_fc": LinearLayer(d, f, layers),
        "c_proj": LinearLayer(f, d, layers),
    }


def gpt_neo_sublayers(model: nn.Module) -> Iterator[tuple[nn.Module, nn.Module, str]]:
    """(module, the same module, kind) for the attention and the MLP of every block: their
    outputs are what the block adds to its residual stream."""
    for block in model.transformer.h:
        yield block.attn, block.attn, "self_attention"
        yield block.mlp, block.mlp, "feed_forward"


def gpt_neo_block_parameter_count(config: PretrainedConfig) -> int:
    d, f = config.hidden_size, gpt_neo_inner_width(config)
    attention = 4 * d * d + d            # q, k, v, out_proj and its bias
    mlp = d * f + f + f * d + d          # c_fc and c_proj with biases
    return attention + mlp + 2 * 2 * d   # ln_1, ln_2: weight and bias


def gpt_neo_layer_norm_count(config: PretrainedConfig) -> int:
    return 2 * config.num_layers + 1     # ln_1 and ln_2 per block, ln_f


def gpt_neo_parameter_count(config: PretrainedConfig) -> int:
    """Closed-form parameter count of GPTNeoForCausalLM (tied or untied head)."""
    d = config.hidden_size
    head = 0 if config.tie_word_embeddings else config.vocab_size * d
    return (config.vocab_size * d + config.max_position_embeddings * d + head
            + config.num_layers * gpt_neo_block_parameter_count(config) + 2 * d)   # + ln_f
