"""The package's import contracts (pyproject.toml's [tool.importlinter]) hold: no stage imports
another, library packages never import a stage or the CLI, the data side and the report stay
apart from models, statistics is self-contained, and no modules or packages import each other in
a cycle; the folders are the layers, and every module and package of cfqa sits in one."""
from __future__ import annotations

import shutil
import tomllib
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


def contracts() -> list[dict]:
    return tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_import_contract_is_kept():
    out = lint_imports()
    kept = [line for line in out.splitlines() if line.endswith(" KEPT")]
    assert len(kept) == len(contracts()) >= 8 and "BROKEN" not in out, out


def test_every_top_level_module_and_package_sits_in_a_layer():
    """A new module at the package root, or a new folder, must be placed in the layers."""
    (layers,) = [c["layers"] for c in contracts() if c["name"].startswith("Layers of the package")]
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    package = PROJECT / "workflow" / "cfqa"
    present = {f"cfqa.{path.stem}" for path in package.glob("*.py") if path.name != "__init__.py"}
    present |= {f"cfqa.{path.name}" for path in package.iterdir() if (path / "__init__.py").is_file()}
    assert present == placed
    # The root keeps the entry points and the declarations every layer shares, nothing else.
    assert sorted(p.stem for p in package.glob("*.py")) == [
        "__init__", "cli", "config", "config_schema", "errors", "formats", "launch", "layout", "snakemake_start"]
