"""Progress bars with rate and ETA; silent under CI=true (and when stderr is not a terminal
unless CFQA_PROGRESS=1)."""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    if os.environ.get("CFQA_PROGRESS") == "1":
        return True
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None,
             unit: str = "it", **kwargs) -> tqdm:
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(),
                dynamic_ncols=True, mininterval=0.5, **kwargs)
