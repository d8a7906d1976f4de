"""The examples a train or evaluate job reads: loaded from the `tokenize` stage's output
(cfqa.training.tokenized), or tokenized by the job itself when it is run without one."""
from __future__ import annotations

from pathlib import Path

from cfqa.config import MethodConfig
from cfqa.training.batches import text_pairs, tokenize_pairs, variant_rows, variant_strata
from cfqa.training.tokenized import load_examples


def training_examples(tokenizer, variants: Path, tokenized: Path | None, mcfg: MethodConfig,
                      split: str) -> tuple[list, list[int]]:
    """(examples, their variant indices) of `split` in the method's mixture, with its target
    format and lengths."""
    tcfg = mcfg.train
    if tokenized is not None:
        return load_examples(tokenized, mcfg.backbone, tokenizer, variants, split, tcfg.mixture, tcfg.target_format,
                             tcfg.max_input_length, tcfg.max_target_length)
    rows = variant_rows(variants, split, tcfg.mixture)
    return (tokenize_pairs(tokenizer, text_pairs(rows, tcfg.target_format), tcfg.max_input_length,
                           tcfg.max_target_length), variant_strata(rows))
