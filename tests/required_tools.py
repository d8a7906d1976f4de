"""Tests that need a system tool (Chromium, buildah, slurmctld, a tmpfs mount): skipped with the
reason where the tool is missing on a developer's machine, but never in CI. Under `CI=true`
(.ci/run installs every such tool from Debian) a missing tool fails the test, so a CI machine
without it cannot pass by skipping. tests/conftest.py records whether the suite runs in CI in
CFQA_REQUIRE_TOOLS before it sets CI=true for quiet progress bars."""
from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CFQA_REQUIRE_TOOLS") == "1"


def missing(reason: str, *, module: bool = False) -> None:
    """Skips (locally) or fails (in CI) for a tool that is not there; `reason` says how to get it."""
    if in_ci():
        pytest.fail(f"required in CI, but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def require_executable(name: str, how: str, *, module: bool = False, env_override: str | None = None) -> str:
    """The path of executable `name` (or of `env_override`'s value, when that variable is set)."""
    path = (os.environ.get(env_override) if env_override else None) or shutil.which(name)
    if path is None:
        missing(f"{name} is not installed ({how})", module=module)
    return path
