"""The method registry: one module per method, each defining `SPEC: MethodSpec`; the names and
options classes are in `cfqa.methods.options` (light to import, for config validation)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cfqa.methods.options import METHOD_OPTIONS

if TYPE_CHECKING:
    from cfqa.methods.base import MethodSpec

METHOD_NAMES = tuple(METHOD_OPTIONS)


def get_method(name: str) -> MethodSpec:
    if name not in METHOD_NAMES:
        raise KeyError(f"unknown method {name!r}; the registry has {list(METHOD_NAMES)}")
    return importlib.import_module(f"cfqa.methods.{name}").SPEC
