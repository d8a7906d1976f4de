"""The code a stage runs, as paths (DVC deps) and as one hash (a Snakemake param): a change to
a file a stage runs reruns exactly the stages that run it, in both engines.

What a stage runs is read from the code itself, never listed by hand: every cfqa module
`cfqa.stages.<name>` and the CLI import, transitively (imports inside functions too, and each
package's __init__), found by parsing the sources under the given project root, so an image's
copy of the package is read as it is. A registry that imports its entries by name
(`importlib.import_module(f"cfqa.methods.{name}")`) runs every module of that package. Besides
Python, every stage reads the params schema. Written here because no library resolves a
package's static import graph per entry module and maps it to files: import-linter's grimp
builds the graph but needs the package importable from the path, not a bare copy of it."""
from __future__ import annotations

import ast
import functools
import hashlib
import posixpath
from pathlib import Path

from cfqa.dag.table import PACKAGE, Stage

# Read by every stage besides its Python: the params schema cfqa.config validates against.
COMMON_DATA: tuple[str, ...] = ("workflow/schemas/params.schema.yaml",)
ENTRY_MODULES = ("cfqa.cli",)               # run by every stage, which the CLI imports by name
PACKAGE_NAME = "cfqa"

# Python's bytecode caches are rebuilt on import and are not code; .dvcignore names them too.
IGNORED_DIRS = frozenset({"__pycache__"})
IGNORED_SUFFIXES = (".pyc",)


def _module_file(root: Path, name: str) -> Path | None:
    path = root / "workflow" / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _by_name_package(node: ast.Call) -> str | None:
    """"cfqa.methods" for `importlib.import_module(f"cfqa.methods.{name}")`, else None."""
    func = node.func
    named = isinstance(func, ast.Attribute) and func.attr == "import_module" or \
        isinstance(func, ast.Name) and func.id == "import_module"
    if not named or not node.args or not isinstance(node.args[0], ast.JoinedStr):
        return None
    head = node.args[0].values[0] if node.args[0].values else None
    if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value.startswith(PACKAGE_NAME + "."):
        return head.value.rstrip(".")
    return None


def _imports(path: Path) -> tuple[str, ...]:
    """Module names a source file imports (as written; `pkg.*` for a by-name registry)."""
    stat = path.stat()
    return _parsed_imports(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _parsed_imports(path: Path, _mtime_ns: int, _size: int) -> tuple[str, ...]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]    # a submodule, or a name
        elif isinstance(node, ast.Call) and (package := _by_name_package(node)):
            names.append(package + ".*")
    return tuple(names)


def _package_modules(root: Path, package: str) -> list[str]:
    folder = root / "workflow" / Path(*package.split("."))
    return [package + "." + ".".join(file.relative_to(folder).with_suffix("").parts)
            for file in sorted(folder.rglob("*.py")) if not _ignored(file.relative_to(folder))]


def import_closure(root: Path, modules: tuple[str, ...]) -> set[Path]:
    """Every cfqa source file the modules run, transitively, relative to `root`."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name.split(".")[0] != PACKAGE_NAME:
            continue
        if name.endswith(".*"):
            todo += _package_modules(root, name[:-2])
            continue
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):      # the packages' __init__ files run first
            path = _module_file(root, ".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo += _imports(path)
    return {path.relative_to(root) for path in seen}


def _collapsed(files: set[Path], root: Path) -> set[str]:
    """The files, with every package folder whose files all run named as the folder (shorter
    dvc.yaml deps; the same files either way)."""
    paths = {file.as_posix() for file in files}
    package_dir = root / PACKAGE
    folders = sorted({file.parent for file in files if file.parent != Path(PACKAGE)}, key=lambda p: len(p.parts))
    for folder in folders:
        inside = {f.relative_to(root).as_posix() for f in (root / folder).rglob("*")
                  if f.is_file() and not _ignored(f.relative_to(root / folder))}
        if inside and inside <= paths and (root / folder).resolve() != package_dir.resolve():
            paths = {p for p in paths if p not in inside and not p.startswith(folder.as_posix() + "/")}
            paths.add(folder.as_posix())
    return paths


def code_paths(spec: Stage | str, root: Path | None = None) -> list[str]:
    """Paths relative to the project root, sorted, each once: the stage's DVC code deps."""
    root = root or _default_root()
    name = spec if isinstance(spec, str) else spec.name
    files = import_closure(root, (f"{PACKAGE_NAME}.stages.{name}", *ENTRY_MODULES))
    return sorted({*_collapsed(files, root), *COMMON_DATA}, key=lambda p: posixpath.normpath(p))


def code_files(name: str, root: Path) -> list[Path]:
    """Every file under the stage's code paths (folders walked), relative to `root`."""
    files: set[Path] = set()
    for path in code_paths(name, root):
        full = root / path
        if full.is_file():
            files.add(Path(path))
        elif full.is_dir():
            files.update(file.relative_to(root) for file in full.rglob("*")
                         if file.is_file() and not _ignored(file.relative_to(full)))
        else:
            raise FileNotFoundError(f"{full}: code path of stage {name!r} (cfqa.dag.code) does not exist")
    return sorted(files)


def _ignored(relative: Path) -> bool:
    return any(part in IGNORED_DIRS for part in relative.parts) or relative.suffix in IGNORED_SUFFIXES


def _default_root() -> Path:
    return Path(__file__).resolve().parents[3]       # workflow/cfqa/dag/code.py -> the project root


def code_hash(name: str, root: Path) -> str:
    """sha256 over the stage's code files (path and content)."""
    digest = hashlib.sha256()
    for path in code_files(name, root):
        digest.update(path.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256((root / path).read_bytes()).digest())
    return digest.hexdigest()
