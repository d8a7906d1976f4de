"""Running Snakemake and DVC on the project from tests: the venv's bin first on PATH."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# What every run of a checkout shares, whatever its run root: Snakemake's state and the MLflow
# store (runs are told apart by their experiment, `tracking.experiment`).
SHARED_STATE = (".snakemake/", "mlflow.db", "mlflow.db.lock", "mlartifacts/")
# The folders a run at the default root writes (a profile's run writes them under its root).
DEFAULT_FOLDERS = ("data", "models", "results", "reports", "logs")


def file_stamps(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under `root`, by path relative to it: compared before and
    after a run, the files the run wrote or changed."""
    return {path.relative_to(root).as_posix(): (path.stat().st_mtime_ns, path.stat().st_size)
            for path in root.rglob("*") if path.is_file()}


def tool_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "CI": "true"}
    env.update(extra)
    return env


def run_tool(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


# A test's own commits: a fresh CI machine has no git identity configured.
GIT = ["git", "-c", "user.email=ci@cfqa", "-c", "user.name=ci"]


def commit_all(root: Path, message: str) -> None:
    """Everything under `root` committed, in a repository created there first if it has none
    (DVC needs one, and the runs record the commit)."""
    if not (root / ".git").exists():
        run_tool(["git", "init", "-q"], root)
    run_tool([*GIT, "add", "-A"], root)
    run_tool([*GIT, "commit", "-qm", message], root)


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

