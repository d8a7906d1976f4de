"""The package's import contracts (pyproject.toml's [tool.importlinter]) hold: no stage imports
another, library packages never import a stage or the CLI, the data side and the report stay
apart from models, statistics is self-contained, and no modules or packages import each other in
a cycle."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline_support import PROJECT


def lint_imports() -> str:
    found = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([found, "--config", str(PROJECT / "pyproject.toml"), "--no-cache"],
                            cwd=PROJECT / "workflow", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_import_contract_is_kept():
    out = lint_imports()
    kept = [line for line in out.splitlines() if line.endswith(" KEPT")]
    assert len(kept) == 7 and "BROKEN" not in out, out
