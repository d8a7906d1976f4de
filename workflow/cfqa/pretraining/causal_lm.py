"""The decoder-only base model of the embedded world: a tiny GPT-Neo pretrained with the
next-token objective on the world's corpus, beside the span-corruption T5 (stages/pretrain.py).

The tokenizer is a byte-level BPE trained on the corpus (causal_tokenizer.py) with its own
pad token. The model is saved with save_pretrained (safetensors) beside the tokenizer, so
cfqa.training.backbone.load_backbone reads it back as an AutoModelForCausalLM (its config has
is_encoder_decoder false). Every layer attends globally: GPT-Neo's local layers slide a
window over cache slots, which left-padded batched generation would shift.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from cfqa.io.atomic_io import write_json
from cfqa.config import PretrainConfig
from cfqa.io.logs import get_logger
from cfqa.model.model_family import ModelFamily
from cfqa.pretraining import loop
from cfqa.pretraining.causal_tokenizer import train_bpe_tokenizer
from cfqa.io.timing_files import write_timing
from cfqa.training.optimization import seed_everything

log = get_logger(__name__)

# Positions the model can read: pretraining sequences are pretrain.max_length tokens, but
# fine-tuning reads a prompt and its answer as one sequence (train.max_input_length +
# max_target_length, 96 + 40 in params.yaml) and generation appends max_new_tokens.
MAX_POSITIONS = 512


def tiny_gpt_neo_config(cfg: PretrainConfig, vocab_size: int, *, eos_id: int, pad_id: int,
                        max_positions: int = MAX_POSITIONS) -> GPTNeoConfig:
    if cfg.d_model % cfg.num_heads:
        raise ValueError(f"pretrain.d_model ({cfg.d_model}) must be divisible by num_heads ({cfg.num_heads})")
    return GPTNeoConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_positions,
        hidden_size=cfg.d_model,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.d_ff,
        attention_types=[[["global"], cfg.num_layers]],
        embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id,
    )


def pack_documents(token_ids: list[list[int]], max_length: int, eos_id: int) -> list[list[int]]:
    """Sentences each followed by eos, concatenated and cut into sequences of max_length tokens
    (the last one shorter): the model sees where a statement ends, as an answer ends."""
    stream = [token for ids in token_ids for token in (*ids, eos_id)]
    return [stream[start:start + max_length] for start in range(0, len(stream), max_length)]


def pretrain_causal_lm(cfg: PretrainConfig, corpus: Path, out_dir: Path) -> dict:
    """Trains the tokenizer and a tiny GPT-Neo on `corpus`, saves both into `out_dir` (the
    caller makes it atomic) with the pretraining record, pretrain.json, which it returns."""
    started = time.perf_counter()
    seed_everything(cfg.seed)                # the model's initial weights and the batch draws
    sentences = corpus.read_text(encoding="utf-8").splitlines()
    tokenizer = train_bpe_tokenizer(sentences, cfg.vocab_size)
    token_ids = tokenizer(sentences, add_special_tokens=False).input_ids
    sequences = pack_documents(token_ids, cfg.max_length, tokenizer.eos_token_id)
    log.info("read %s: %d sentences, %d tokens, %d packed sequences, vocabulary %d",
             corpus, len(sentences), sum(map(len, token_ids)), len(sequences), len(tokenizer))
    model = GPTNeoForCausalLM(tiny_gpt_neo_config(cfg, len(tokenizer), eos_id=tokenizer.eos_token_id,
                                                  pad_id=tokenizer.pad_token_id))
    losses = loop.pretrain(model, sequences, loop.next_token_example, steps=cfg.steps, cfg=cfg,
                           pad_id=tokenizer.pad_token_id, desc="next-token", family=ModelFamily.CAUSAL)
    model.save_pretrained(out_dir)           # safetensors is save_pretrained's default format
    tokenizer.save_pretrained(out_dir)
    record = {
        "objective": "next_token",
        "steps": len(losses),
        "first_loss": float(np.mean(losses[:10])) if losses else None,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocabulary": len(tokenizer),
    }
    write_json(out_dir / "pretrain.json", record)
    # Apart from the record: the backbone's hash covers its content, not when it was made.
    write_timing(out_dir, "pretrain", time.perf_counter() - started)
    return record
