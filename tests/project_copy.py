"""A temporary copy of the project's files (what git tracks or would track), for tests that
run Snakemake or DVC on a changed configuration or changed code."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline_support import PROJECT


def project_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=PROJECT, capture_output=True, text=True, check=True).stdout.split("\n")
    return [name for name in listed if name and (PROJECT / name).is_file()]


def copy_project(root: Path, under: str = "") -> Path:
    """Copies the project's files (only those under `under`, when given) into `root`."""
    for name in project_files():
        if name.startswith(under):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, root / name)
    return root
