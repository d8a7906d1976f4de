"""The code a stage runs, as paths (DVC deps) and as one hash (a Snakemake param): a change
under a listed folder reruns exactly the stages that list it, in both engines."""
from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path

from cfqa.dag.table import COMMON_CODE, PACKAGE, Stage, stage

# Python's bytecode caches are rebuilt on import and are not code; .dvcignore names them too.
IGNORED_DIRS = frozenset({"__pycache__"})
IGNORED_SUFFIXES = (".pyc",)


def code_paths(spec: Stage | str) -> list[str]:
    """Paths relative to the project root, sorted, each once: the stage's DVC code deps."""
    relative = {*COMMON_CODE, *(stage(spec) if isinstance(spec, str) else spec).code}
    return sorted(posixpath.normpath(posixpath.join(PACKAGE, path)) for path in relative)


def code_files(name: str, root: Path) -> list[Path]:
    """Every file under the stage's code paths (folders walked), relative to `root`."""
    files: set[Path] = set()
    for path in code_paths(name):
        full = root / path
        if full.is_file():
            files.add(Path(path))
        elif full.is_dir():
            files.update(file.relative_to(root) for file in full.rglob("*")
                         if file.is_file() and not _ignored(file.relative_to(full)))
        else:
            raise FileNotFoundError(f"{full}: code path of stage {name!r} (cfqa.dag.table) does not exist")
    return sorted(files)


def _ignored(relative: Path) -> bool:
    return any(part in IGNORED_DIRS for part in relative.parts) or relative.suffix in IGNORED_SUFFIXES


def code_hash(name: str, root: Path) -> str:
    """sha256 over the stage's code files (path and content)."""
    digest = hashlib.sha256()
    for path in code_files(name, root):
        digest.update(path.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256((root / path).read_bytes()).digest())
    return digest.hexdigest()
