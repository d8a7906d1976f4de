"""The method registry: one module per method under cfqa.methods, each defining
`SPEC: MethodSpec`, imported by name when a model is built. The names and options classes are
in `cfqa.methods.options` (light to import, for config validation). Stages that never build a
model never import this module, so a change to a method reruns only the stages that run it
(cfqa.dag.code reads the by-name import below as "every module of cfqa.methods")."""
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
