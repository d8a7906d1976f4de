"""The report's inputs: every method's results read through cfqa.contract."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cfqa.contract import (CurveRow, MethodFiles, MetricsRecord, TrainRecord, read_curve, read_metrics,
                           read_train_record)


@dataclass(frozen=True)
class MethodResults:
    name: str
    train: TrainRecord
    metrics: MetricsRecord
    curve: list[CurveRow] = field(default_factory=list)   # empty when train_curve.csv is absent


def load_method_results(directory: Path, method: str) -> MethodResults:
    """One method's results; train.json and metrics.json are required, the curve optional."""
    files = MethodFiles(Path(directory))
    train = read_train_record(files.train_record, method)
    metrics = read_metrics(files.metrics, method)
    curve = read_curve(files.train_curve) if files.train_curve.is_file() else []
    return MethodResults(name=method, train=train, metrics=metrics, curve=curve)


PREFERRED_SETS = ("test", "seen")


def evaluation_sets(results: list[MethodResults]) -> list[str]:
    """test and seen first, then any other evaluated set, in a stable order."""
    present = {name for r in results for name in r.metrics.sets}
    return [s for s in PREFERRED_SETS if s in present] + sorted(present - set(PREFERRED_SETS))
