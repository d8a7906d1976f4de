"""Whether a fine-tuning method applies to a model family (the registry's `families`, in
cfqa.methods.options). Light to import (no torch), so a configuration check can reject a
method/family pair before any model loads."""
from __future__ import annotations

from cfqa.methods.options import METHOD_FAMILIES
from cfqa.model.model_family import ModelFamily


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
