"""The method registry: one module per method, each defining `SPEC: MethodSpec`."""
from __future__ import annotations

import importlib

from cfqa.methods.base import MethodSpec

METHOD_NAMES = (
    "full", "last_layer", "lora", "ia3", "prompt", "prefix", "prefix_decoder", "adapter", "lst",
)


def get_method(name: str) -> MethodSpec:
    if name not in METHOD_NAMES:
        raise KeyError(f"unknown method {name!r}; the registry has {list(METHOD_NAMES)}")
    return importlib.import_module(f"cfqa.methods.{name}").SPEC
