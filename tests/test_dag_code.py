"""Code is a dependency: the cfqa code each stage runs is read from its imports (cfqa.dag.code), DVC lists it
under deps and Snakemake holds its hash as a param, so a change reruns exactly the stages that
run the changed file."""
from __future__ import annotations

import yaml

from cfqa.dag import STAGES, code_files, code_hash, code_paths
from pipeline_support import PROJECT
from project_copy import copy_project


def test_a_module_a_stage_starts_importing_joins_its_code_and_only_its_code(tmp_path):
    """The code is read from the imports (inside functions too), not listed by hand."""
    root = copy_project(tmp_path, under="workflow/")
    before = {s.name: code_hash(s.name, root) for s in STAGES}
    (root / "workflow/cfqa/report/extra_table.py").write_text('"""A new table."""\n')
    stage_file = root / "workflow/cfqa/stages/report.py"
    stage_file.write_text(stage_file.read_text() + "\n\ndef _later():\n    from cfqa.report import extra_table\n")
    after = {s.name: code_hash(s.name, root) for s in STAGES}
    assert {name for name in before if before[name] != after[name]} == {"report"}
    assert "workflow/cfqa/report/extra_table.py" in map(str, code_files("report", root))


def test_a_registry_that_imports_by_name_runs_its_whole_package():
    """cfqa.methods.registry imports each method module by name: the stages that build a
    model run every method module; the others only the options that validate the config."""
    model_stages = {s.name for s in STAGES if "workflow/cfqa/methods" in code_paths(s)}
    assert model_stages == {"tune", "train", "evaluate"}
    validate = set(map(str, code_files("validate", PROJECT)))
    assert "workflow/cfqa/methods/options.py" in validate and "workflow/cfqa/methods/lora.py" not in validate


def test_every_stage_runs_the_cli_and_its_module_and_reads_the_schema():
    for spec in STAGES:
        paths = set(code_paths(spec))
        assert {"workflow/cfqa/cli.py", "workflow/cfqa/config.py", "workflow/schemas/params.schema.yaml"} <= paths
        module = f"workflow/cfqa/stages/{spec.name}.py"
        assert module in paths or not (PROJECT / module).exists(), spec.name    # validate runs in the CLI


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
    assert {"workflow/cfqa/methods", "workflow/cfqa/training/loop.py", "workflow/cfqa/stages/train.py",
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
