"""The tiny T5 of the embedded world, its config built from params `pretrain`."""
from __future__ import annotations

from transformers import T5Config, T5ForConditionalGeneration

from cfqa.config import PretrainConfig


def tiny_t5_config(cfg: PretrainConfig, vocab_size: int) -> T5Config:
    if cfg.d_model % cfg.num_heads:
        raise ValueError(f"pretrain.d_model ({cfg.d_model}) must be divisible by num_heads ({cfg.num_heads})")
    return T5Config(
        vocab_size=vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_model // cfg.num_heads,  # peft's prefix tuning assumes d_model / heads
        num_heads=cfg.num_heads,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def new_tiny_t5(cfg: PretrainConfig, vocab_size: int) -> T5ForConditionalGeneration:
    return T5ForConditionalGeneration(tiny_t5_config(cfg, vocab_size))
