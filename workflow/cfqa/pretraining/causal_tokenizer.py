"""A small byte-level BPE vocabulary for a decoder-only (GPT-style) model of the embedded world.

Byte-level, so any string can be spelled (no unknown token) and unseen names split into
pieces; digits are split one per piece, as the T5 vocabulary does (see tokenizer.py). Trained
with the `tokenizers` library (the Rust BPE trainer transformers' fast tokenizers use) and
wrapped as a PreTrainedTokenizerFast that save_pretrained / AutoTokenizer round-trip.

GPT-style vocabularies have one special token, `<|endoftext|>`, used as bos and eos; this one
adds a distinct `<pad>` so padding is never confused with the end of an answer.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from cfqa.pretraining.tokenizer import format_lines

EOS = "<|endoftext|>"
PAD = "<pad>"


def train_bpe_tokenizer(lines: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE over `lines` (and their lower-cased copies: questions are lower case)."""
    lines = list(lines)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 2:
        raise ValueError(f"pretrain.vocab_size {vocab_size} is below the byte-level minimum "
                         f"{len(alphabet) + 2} (256 bytes + eos + pad)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], initial_alphabet=alphabet,
                                  show_progress=False)
    tokenizer.train_from_iterator(lines + [line.lower() for line in lines] + format_lines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, pad_token=PAD)
