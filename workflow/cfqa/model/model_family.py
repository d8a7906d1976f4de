"""The two model families cfqa trains: encoder-decoder (seq2seq, e.g. T5) and decoder-only
(causal, e.g. GPT-Neo). The family is read from the model's config (`is_encoder_decoder`),
never guessed from a model name; batching, generation and method placement branch on it."""
from __future__ import annotations

from enum import Enum


class ModelFamily(str, Enum):
    SEQ2SEQ = "seq2seq"
    CAUSAL = "causal"


def family_of(config) -> ModelFamily:
    """The family of a transformers config (or of anything with `is_encoder_decoder`)."""
    return ModelFamily.SEQ2SEQ if getattr(config, "is_encoder_decoder", False) else ModelFamily.CAUSAL


def model_family(model) -> ModelFamily:
    """The family of a built model: a transformers model, a peft wrapper or a method's module,
    each of which exposes the backbone's `config`."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no `config`: cannot tell its model family")
    return family_of(config)
