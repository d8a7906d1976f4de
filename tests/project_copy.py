"""A temporary copy of the project's source (what git tracks, and new files it would track),
for tests that run Snakemake or DVC on a changed configuration or changed code.

The copy never carries what a run of the pipeline wrote into the checkout: a user who ran
`make reproduce` and then `make test` in one clone has results, reports, logs, data, models,
a dvc.lock and an MLflow store there, some of them files git is meant to hold (headline.json,
train_curve.csv) and may already hold. Those paths are the run roots of the DAG table and are
left out whether git tracks them or not."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cfqa.dag import STAGES
from pipeline_support import PROJECT

# What a run writes besides the stages' outputs: its logs, the profiles' run roots, DVC's
# lock and plots, the MLflow store and its artifacts.
RUN_WRITES = frozenset({"logs", "runs", "dvc.lock", "dvc_plots", "mlflow.db", "mlflow.db.lock", "mlruns",
                        "mlartifacts", ".snakemake"})


def run_output_roots() -> frozenset[str]:
    """The first path segment of everything the pipeline writes into a checkout."""
    outputs = {output.path.split("/", 1)[0] for stage in STAGES for output in stage.outputs.values()}
    return frozenset(outputs | RUN_WRITES)


def project_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=PROJECT, capture_output=True, text=True, check=True).stdout.split("\0")
    outputs = run_output_roots()
    return [name for name in listed
            if name and name.split("/", 1)[0] not in outputs and (PROJECT / name).is_file()]


def copy_project(root: Path, under: str = "") -> Path:
    """Copies the project's files (only those under `under`, when given) into `root`."""
    for name in project_files():
        if name.startswith(under):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, root / name)
    return root
