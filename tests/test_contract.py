"""The results contract: one module owns every file the stages exchange. Its readers check
what its writers wrote; no stage or the tracking layer reaches into another's modules."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from cfqa.config import PROJECT_ROOT
from cfqa.contract import (SCHEMA_VERSION, ResultsError, read_data_stats, read_metrics, read_predictions,
                           read_train_record, write_predictions, write_record)
from cfqa.contract import records as records_module

PACKAGE = PROJECT_ROOT / "workflow" / "cfqa"
UNIT_SUFFIXES = ("_pct", "_bytes", "_s", "_per_s", "_ms")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_stage_imports_another_and_tracking_does_not_import_the_report():
    stages = {p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
    for path in (PACKAGE / "stages").glob("*.py"):
        others = {f"cfqa.stages.{s}" for s in stages - {path.stem}} | {"cfqa.stages"}
        assert not imported_modules(path) & others, f"{path.name} imports another stage"
    assert not any(name.startswith("cfqa.report") for name in imported_modules(PACKAGE / "tracking.py"))


def test_result_fields_name_their_units():
    """Every float field of a record says its unit, or is a loss or a count-like ratio."""
    # Losses and learning rates have no unit; Summary.methods maps summary keys that carry
    # their own suffixes.
    unitless = {"best_val_loss", "train_loss", "val_loss", "lr", "chosen_lr", "methods"}
    for name in dir(records_module):
        kind = getattr(records_module, name)
        if not (isinstance(kind, type) and issubclass(kind, records_module.Record)):
            continue
        for field, annotation in kind.__annotations__.items():
            if "float" in str(annotation) and field not in unitless:
                assert field.endswith(UNIT_SUFFIXES), f"{name}.{field} has no unit suffix"


@pytest.mark.slow
def test_every_stage_file_reads_back_through_the_contract(stage_results, tmp_path):
    runs = [(method, seed) for method in stage_results.methods for seed in stage_results.seeds]
    assert len(runs) == 4     # two methods x two seeds of the tiny configuration
    for method, seed in runs:
        directory = stage_results.run_dir(method, seed)
        train = read_train_record(directory / "train.json", method)
        metrics = read_metrics(directory / "metrics.json", method)
        predictions = read_predictions(directory / "predictions.jsonl")
        assert train.schema_version == metrics.schema_version == SCHEMA_VERSION
        assert (train.method, train.seed) == (metrics.method, metrics.seed) == (method, seed)
        n = sum(cell.n for cell_set in metrics.sets.values() for cell in cell_set.values())
        assert len(predictions) == n
        # Written again by the writers, the files are byte-identical (one encoding, fields in declaration order).
        write_record(tmp_path / "train.json", train)
        assert (tmp_path / "train.json").read_bytes() == (directory / "train.json").read_bytes()
        write_predictions(tmp_path / "p.jsonl", predictions)
        assert (tmp_path / "p.jsonl").read_bytes() == (directory / "predictions.jsonl").read_bytes()
    stats = read_data_stats(stage_results.data_stats)
    assert stats.counts["test"]["factual"] == stats.counts["test"]["counterfactual"] > 0


@pytest.mark.slow
def test_unknown_and_missing_fields_are_named(stage_results, tmp_path):
    record = json.loads((stage_results.run_dir("full", 0) / "train.json").read_text())
    record["cost"]["peak_memory"] = 1
    (tmp_path / "train.json").write_text(json.dumps(record))
    with pytest.raises(ResultsError, match=r"unknown field `peak_memory` - at `\$\.cost`"):
        read_train_record(tmp_path / "train.json")
    del record["cost"]["peak_memory"], record["cost"]["step_memory"]
    (tmp_path / "train.json").write_text(json.dumps(record))
    with pytest.raises(ResultsError, match=r"missing required field `step_memory` - at `\$\.cost`"):
        read_train_record(tmp_path / "train.json")
    (tmp_path / "p.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ResultsError, match=re.escape(f"{tmp_path / 'p.jsonl'}:1:")):
        read_predictions(tmp_path / "p.jsonl")
