"""Which model families each fine-tuning method applies to. Light to import (no torch), so a
configuration check can reject a method/family pair before any model loads."""
from __future__ import annotations

from cfqa.model_family import ModelFamily

BOTH = (ModelFamily.SEQ2SEQ, ModelFamily.CAUSAL)

# Why some are seq2seq only:
# - prefix: the in-house prefixes sit in T5's encoder self-, decoder self- and cross-attention
#   (through T5Stack hooks); a decoder-only LM gets peft's prefix tuning as `prefix_decoder`.
# - lst: the side network is a pruned copy of T5's encoder and decoder (relative position
#   bias, cross-attention), built from T5's weights.
METHOD_FAMILIES: dict[str, tuple[ModelFamily, ...]] = {
    "full": BOTH,
    "last_layer": BOTH,
    "lora": BOTH,
    "ia3": BOTH,
    "prompt": BOTH,
    "prefix": (ModelFamily.SEQ2SEQ,),
    "prefix_decoder": BOTH,
    "adapter": BOTH,
    "lst": (ModelFamily.SEQ2SEQ,),
}


class UnsupportedFamily(ValueError):
    """A method asked of a model family it cannot be applied to."""


def check_method_family(method: str, family: ModelFamily | str) -> None:
    """Raises UnsupportedFamily naming the method and the family when they do not fit."""
    family = ModelFamily(family)
    supported = METHOD_FAMILIES.get(method)
    if supported is None:
        raise KeyError(f"unknown method {method!r}; the family table has {sorted(METHOD_FAMILIES)}")
    if family not in supported:
        raise UnsupportedFamily(f"method {method!r} cannot be applied to a {family.value} model (a backbone whose "
                                f"config has is_encoder_decoder={family is ModelFamily.SEQ2SEQ}); it supports "
                                f"the {' and '.join(f.value for f in supported)} family only")
