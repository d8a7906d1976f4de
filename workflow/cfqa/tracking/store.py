"""Where the tracking store and its artifacts live.

The default store is `sqlite:///mlflow.db` relative to the project root (the working
directory of every stage). Artifacts go to `mlartifacts/` beside the database. The
experiment records them as `mlflow-artifacts:/<experiment>`, MLflow's own location-free
scheme, which `mlflow server`/`mlflow ui` serve from `./mlartifacts`: a copied or moved
checkout keeps its runs' artifacts and writes new ones under itself, never into the
original's folder.

A relative store location is relative to the project root: the working directory, or under
DVC the `DVC_ROOT` it sets. `dvc exp run --queue` runs the stages in a temporary copy of the
workspace, which DVC deletes, with DVC_ROOT naming the checkout the experiment was queued
from, so queued experiments log into the checkout's store (`project_root`).
"""
from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

ARTIFACTS_DIRNAME = "mlartifacts"
# MLflow's proxied-artifact scheme: the server maps `mlflow-artifacts:/<path>` to
# `<--artifacts-destination>/<path>` (default ./mlartifacts), so the store holds no absolute path.
PROXIED_ARTIFACTS_SCHEME = "mlflow-artifacts"


def sqlite_database_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (absolute; relative paths from the project
    root, `project_root()`), or None for any other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    return (Path(path) if path.startswith("/") else project_root() / path).resolve()


# Set by DVC for every command it runs: the checkout's root, also when `dvc exp run --queue`
# runs the command in a temporary copy (dvc/repo/experiments/queue/base.py records it when
# the experiment is queued, before the workspace is copied).
DVC_ROOT_ENV = "DVC_ROOT"


def project_root() -> Path:
    """What a relative tracking location is relative to: DVC's DVC_ROOT where DVC runs the
    stage, otherwise the working directory (every stage runs in the project root)."""
    root = os.environ.get(DVC_ROOT_ENV)
    return Path(root) if root else Path.cwd()


def resolved_uri(uri: str) -> str:
    """A relative `sqlite:///` URI made absolute against the project root. MLflow caches
    one store per URI string in a process, and SQLite resolves a relative path when a new
    connection opens, so a relative URI could reach another directory's database after a
    chdir; other URIs are returned unchanged."""
    database = sqlite_database_path(uri)
    if database is None:
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return f"sqlite:///{database}" + (f"?{query}" if query else "")


def artifacts_root(uri: str) -> Path | None:
    """`mlartifacts/` beside a SQLite database, or None for any other store."""
    database = sqlite_database_path(uri)
    return None if database is None else database.parent / ARTIFACTS_DIRNAME


def artifact_location(uri: str, experiment: str) -> str | None:
    """The artifact location a new experiment records: `mlflow-artifacts:/<experiment>` for a
    SQLite store (resolved against `artifacts_root` when used, so it moves with the checkout);
    None lets a server decide."""
    if sqlite_database_path(uri) is None:
        return None
    return f"{PROXIED_ARTIFACTS_SCHEME}:/{re.sub(r'[^A-Za-z0-9._-]+', '_', experiment)}"


def local_artifact_dir(uri: str, artifact_uri: str) -> Path | None:
    """Where a run's `mlflow-artifacts:` URI lives on disk for a SQLite store: under
    `artifacts_root(uri)`, as `mlflow server --artifacts-destination` resolves it. None for
    other URIs (a file URI made by an earlier version, or a server's store), which MLflow's own
    artifact repositories handle."""
    root = artifacts_root(uri)
    parsed = urllib.parse.urlparse(artifact_uri)
    if root is None or parsed.scheme != PROXIED_ARTIFACTS_SCHEME:
        return None
    relative = Path(parsed.path.lstrip("/"))
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"artifact URI {artifact_uri!r} leaves {root}")
    return root / relative
