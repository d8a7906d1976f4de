"""A small sentencepiece vocabulary for the embedded world, wrapped as a T5 tokenizer.

The vocabulary is kept small with a hard limit so entity names split into sub-words and any
name can be spelled (whole-word entity pieces make unseen answers unreachable). Two things are
fixed rather than learned, both as single pieces with their leading space:
- the QA format's markers: the corpus never states them, so they came out as 5-7 pieces each,
  a third of every target;
- digits, one per piece: learned pieces spelled "3" as one piece and "5" as a bare space piece
  plus "5", so a number answer often began with a piece that says nothing about it.
Measured with full fine-tuning (two seeds each): test factual EM for numbers 33/37 % with the
learned pieces, 49/53 % with markers and split digits; languages 59/66 % -> 79/69 %.
"""
from __future__ import annotations

import io
import string
from pathlib import Path

import sentencepiece as spm
from transformers import PreTrainedTokenizerBase, T5Tokenizer

from cfqa.formats import MARKERS, UNANSWERABLE, format_input, format_target

SPIECE = "spiece.model"
EXTRA_IDS = 100  # <extra_id_*> sentinels for span corruption


def format_lines() -> list[str]:
    """The fixed strings of the QA formats, so ':' and '?' are in the vocabulary."""
    return [format_input("which one", "text"), format_target(UNANSWERABLE, "answer", "disentangled")]


def train_sentencepiece(corpus: Path, out_dir: Path, vocab_size: int, seed: int) -> Path:
    """Trains spiece.model on the corpus (and its lower-cased copy: questions are lower case)."""
    lines = corpus.read_text(encoding="utf-8").splitlines()
    out_dir.mkdir(parents=True, exist_ok=True)
    spm.set_random_generator_seed(seed)
    # Sentences in and model out through memory: a file-based run records its temporary
    # input and output paths in the model, so two runs would never be byte-identical.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines + [l.lower() for l in lines] + format_lines()),
        model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=True,
        split_digits=True, user_defined_symbols=[f"▁{piece}" for piece in (*MARKERS, *string.digits)],
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,  # T5's layout
        num_threads=1, minloglevel=2,  # one thread: deterministic output
    )
    (out_dir / SPIECE).write_bytes(model.getvalue())
    return out_dir / SPIECE


def load_t5_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    # T5Tokenizer(vocab_file=...) silently ignores the file in transformers 5: load from the
    # directory holding spiece.model instead. local_files_only explicitly: the saved
    # tokenizer_config.json records it, and left out it follows the hub's offline mode as the
    # process first read it, so the same stage would write different bytes in a process that
    # imported huggingface_hub before the stage set HF_HUB_OFFLINE.
    return T5Tokenizer.from_pretrained(str(model_dir), extra_ids=EXTRA_IDS, local_files_only=True)
