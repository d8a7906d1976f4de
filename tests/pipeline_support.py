"""Running Snakemake and DVC on the project from tests: the venv's bin first on PATH."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def tool_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "CI": "true"}
    env.update(extra)
    return env


def run_tool(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def profile_settings(profile: str | Path, env: dict[str, str] | None = None) -> dict:
    """An execution profile's settings as Snakemake reads them: its config.yaml through YTE
    (the slurm profile's container settings depend on CFQA_CONTAINERS), under `env`."""
    import yte

    path = Path(profile)
    path = path if path.is_absolute() else PROJECT / "workflow" / "profiles" / path
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        with open(path / "config.yaml", encoding="utf-8") as handle:
            return yte.process_yaml(handle, require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)

