"""Reading one method's results directory (train.json, metrics.json, train_curve.csv) into
plain dicts, with errors that name the file and what was expected."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfqa.atomic_io import read_json

CURVE_COLUMNS = ("step", "train_loss", "val_loss")


class ResultsError(ValueError):
    """A results file is missing or does not have the expected shape."""


@dataclass(frozen=True)
class MethodResults:
    name: str
    train: dict[str, Any]
    metrics: dict[str, Any]
    # Rows of train_curve.csv as {"step": int, "train_loss": float|None, "val_loss": float|None};
    # empty when the file is absent (the curve is informative, not required).
    curve: list[dict[str, Any]] = field(default_factory=list)


def _read_mapping(path: Path, method: str, produced_by: str, required: tuple[str, ...]) -> dict:
    if not path.is_file():
        raise ResultsError(f"{path}: missing; `cfqa {produced_by} --method {method}` writes it")
    value = read_json(path)
    if not isinstance(value, dict):
        raise ResultsError(f"{path}: expected a JSON object at the top level")
    absent = [key for key in required if key not in value]
    if absent:
        raise ResultsError(f"{path}: expected keys {absent} (see workflow/cfqa/contracts.md)")
    return value


def _optional_float(text: str, path: Path, line: int, column: str) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        number = float(text)
    except ValueError:
        raise ResultsError(f"{path}:{line}: column {column!r}: expected a number, got {text!r}") from None
    return number if math.isfinite(number) else None


def read_curve(path: Path) -> list[dict[str, Any]]:
    """train_curve.csv rows; val_loss is None where validation was not run at that step."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CURVE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ResultsError(f"{path}:1: expected columns {list(CURVE_COLUMNS)}, missing {missing}")
        rows = []
        for line, row in enumerate(reader, start=2):
            step = _optional_float(row["step"], path, line, "step")
            if step is None:
                raise ResultsError(f"{path}:{line}: column 'step': expected an integer")
            rows.append({"step": int(step),
                         "train_loss": _optional_float(row["train_loss"], path, line, "train_loss"),
                         "val_loss": _optional_float(row["val_loss"], path, line, "val_loss")})
    return rows


def load_method_results(directory: Path, method: str) -> MethodResults:
    """One method's results; train.json and metrics.json are required, the curve optional."""
    train = _read_mapping(directory / "train.json", method, "train", ("params", "cost"))
    metrics = _read_mapping(directory / "metrics.json", method, "evaluate", ("sets",))
    curve_path = directory / "train_curve.csv"
    curve = read_curve(curve_path) if curve_path.is_file() else []
    return MethodResults(name=method, train=train, metrics=metrics, curve=curve)


def lookup(mapping: Any, *keys: str) -> Any:
    """mapping[k1][k2]...; None where any level is absent (a run may lack a set or variant)."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


PREFERRED_SETS = ("test", "seen")


def evaluation_sets(results: list[MethodResults]) -> list[str]:
    """test and seen first, then any other evaluated set, in a stable order."""
    present = {name for r in results for name in (r.metrics.get("sets") or {})}
    return [s for s in PREFERRED_SETS if s in present] + sorted(present - set(PREFERRED_SETS))
