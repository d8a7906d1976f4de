"""What the Snakefile does before Snakemake reads a parameter or takes its lock.

Parameters: each file is read by cfqa (cfqa.io.params_file: size, UTF-8, nesting, alias expansion)
before Snakemake's own loader sees it, and the merged configuration is validated by cfqa.config
before Snakemake's `validate()`. A bad file or value stops the run there with the line
`cfqa validate` prints and exit status 2: a Snakefile can end Snakemake with SystemExit at parse
time, while an exception would be printed as a multi-line WorkflowError with exit status 1.
Files given with `--configfile` are loaded by Snakemake's command line before any Snakefile
runs, so a file there that YAML cannot read (not UTF-8, nested 100,000 deep) still meets
Snakemake's own error first; their values are checked here like params.yaml's.

Locks: Snakemake locks its inputs and outputs in `.snakemake/locks/` and removes the lock when
it ends, but a killed Snakemake (SIGKILL, out of memory, a lost machine) leaves it, and every
later run stops with "Directory cannot be locked" until `--unlock`. The lock files do not say
who holds them, so each Snakemake that runs this workflow also holds a shared `flock` on
`.snakemake/cfqa-running.lock` for as long as its process lives: the kernel drops it when the
process dies, however it dies. A starting Snakemake that can take that flock exclusively knows
that no Snakemake of this workflow is alive in this directory, so any lock files there are
stale, and removes them; if another one is alive, the locks are left to Snakemake's own check.
flock works on local disks and, on Linux, on NFS (emulated with byte-range locks).
"""
from __future__ import annotations

import fcntl
import sys
from pathlib import Path
from typing import Any, Iterable, NoReturn

from cfqa import config as config_module

LIVENESS_FILE = "cfqa-running.lock"
LOCKS_DIR = "locks"
BAD_PARAMS_EXIT = 2
# Open for the life of the process: closing it would drop the flock. Python opens it
# close-on-exec, so jobs do not inherit it and a stray job outliving a killed Snakemake does not
# keep a dead run's locks alive (the stage's own output lock guards what such a job writes).
_held: list = []


def _stop(error: config_module.ConfigError) -> NoReturn:
    from cfqa.cli import config_error_line

    print(f"cfqa: {config_error_line(error)}", file=sys.stderr)
    sys.exit(BAD_PARAMS_EXIT)


def check_params_files(paths: Iterable[str | Path]) -> None:
    """Each file read within cfqa's limits, before Snakemake loads it; exits 2 with one line."""
    try:
        for path in paths:
            config_module.read_params([path])
    except config_module.ConfigError as error:
        _stop(error)


def check_config(config: dict[str, Any], paths: Iterable[str | Path]) -> None:
    """Snakemake's merged `config` (files and --config values) validated as every stage
    validates it; exits 2 with one line naming the file and key."""
    try:
        config_module.validate_config(config, list(paths))
    except config_module.ConfigError as error:
        _stop(error)


def clear_dead_locks(state_dir: str | Path = ".snakemake") -> list[Path]:
    """Removes the lock files a Snakemake that is no longer running left in `state_dir`, and marks
    this process alive until it ends. Returns the files removed."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / LIVENESS_FILE, "a")
    removed: list[Path] = []
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass                        # another Snakemake of this workflow is running here
    else:
        locks = state_dir / LOCKS_DIR
        for path in sorted(locks.glob("*.lock")) if locks.is_dir() else []:
            path.unlink(missing_ok=True)
            removed.append(path)
    fcntl.flock(handle, fcntl.LOCK_SH)
    _held.append(handle)
    return removed
