"""Headless Chromium for tests that look at a page as a browser renders it: `--dump-dom`
prints the DOM after the page ran its scripts, `--screenshot` writes a PNG. Debian's chromium
(`make browser`); CFQA_CHROMIUM names another binary. Where it is missing the test is skipped
with the reason, except in CI, where it fails (tests/required_tools.py)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from required_tools import require_executable


def binary() -> str:
    """The Chromium to run; skips (or, in CI, fails) the calling test when there is none."""
    return require_executable("chromium", "`make browser` installs Debian's chromium", env_override="CFQA_CHROMIUM")


def run(url: str, profile: Path, *, window: tuple[int, int], wait_ms: int, args: tuple[str, ...],
        timeout_s: float = 180) -> subprocess.CompletedProcess:
    """Chromium on `url` with a fresh profile; `wait_ms` of virtual time lets a single-page
    app fetch and render before the DOM is dumped or the screenshot taken."""
    command = [binary(), "--headless", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={wait_ms}", *args, url]
    if os.geteuid() == 0:
        command.insert(2, "--no-sandbox")      # Chromium refuses to run as root with its sandbox
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done
