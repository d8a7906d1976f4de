"""Code is a dependency: each stage declares the cfqa code it runs (cfqa.dag), DVC lists it
under deps and Snakemake holds its hash as a param, so a change reruns exactly the stages that
run the changed file."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from cfqa.dag import STAGES, code_files, code_hash
from pipeline_support import PROJECT
from project_copy import copy_project

PACKAGE_PARENT = PROJECT / "workflow"


def module_file(name: str) -> Path | None:
    path = PACKAGE_PARENT / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def cfqa_files_run_by(module: str) -> set[Path]:
    """Every cfqa source file a module imports, transitively (function-level imports too),
    with the packages' __init__ files; relative to the project root."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        if parts[0] != "cfqa":
            continue
        for depth in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_names(path))
    return {path.relative_to(PROJECT) for path in seen}


@pytest.mark.parametrize("stage", [s.name for s in STAGES])
def test_declared_code_covers_every_module_the_stage_imports(stage):
    run = cfqa_files_run_by(f"cfqa.stages.{stage}") | cfqa_files_run_by("cfqa.cli")
    missing = run - set(code_files(stage, PROJECT))
    assert not missing, f"add to stage {stage!r} `code` in workflow/cfqa/dag/table.py: {sorted(map(str, missing))}"


def test_a_change_under_methods_changes_tune_train_and_evaluate_only(tmp_path):
    root = copy_project(tmp_path, under="workflow/")
    before = {s.name: code_hash(s.name, root) for s in STAGES}
    lora = root / "workflow/cfqa/methods/lora.py"
    lora.write_text(lora.read_text() + "\n# changed\n")
    after = {s.name: code_hash(s.name, root) for s in STAGES}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"tune", "train", "evaluate"}


def test_bytecode_caches_are_not_code(tmp_path):
    root = copy_project(tmp_path, under="workflow/")
    before = code_hash("train", root)
    cache = root / "workflow/cfqa/methods/__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "lora.cpython-311.pyc").write_bytes(b"\0" * 16)
    assert code_hash("train", root) == before


def test_dvc_deps_list_the_code_each_stage_runs():
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    train = stages["train"]["deps"]         # a method x seed matrix
    assert {"workflow/cfqa/methods", "workflow/cfqa/training", "workflow/cfqa/stages/train.py",
            "workflow/cfqa/config.py"} <= set(train)
    assert "workflow/cfqa/methods" not in stages["download"]["deps"]
    assert "workflow/cfqa/world" in stages["download"]["deps"]


def test_no_code_dependency_is_an_empty_file():
    """DVC warns "'<file>' is empty." for every stage that lists an empty file among its deps,
    each time it checks them: dozens of lines in one `dvc repro` (every stage lists
    workflow/cfqa/stages/__init__.py)."""
    empty = {str(path) for stage in STAGES for path in code_files(stage.name, PROJECT)
             if (PROJECT / path).stat().st_size == 0}
    assert not empty, f"give these files a docstring: {sorted(empty)}"
