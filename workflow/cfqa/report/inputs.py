"""The report's inputs: every method's runs (one per seed), read through cfqa.contract from
results/{method}/seed{seed}/, and the method's learning-rate selection when the `tune` stage
wrote one (results/{method}/lr_selection.json)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cfqa.contract import (LR_SELECTION, CurveRow, LrSelection, MethodFiles, MetricsRecord, PredictionRow,
                           ResultsError, TrainRecord, read_curve, read_lr_selection, read_metrics,
                           read_predictions, read_train_record)


@dataclass(frozen=True)
class RunResults:
    """One trained model: one method with one seed."""

    method: str
    seed: int
    directory: Path
    train: TrainRecord
    metrics: MetricsRecord
    predictions: tuple[PredictionRow, ...]
    curve: tuple[CurveRow, ...] = ()   # empty when train_curve.csv is absent

    @property
    def predictions_path(self) -> Path:
        return MethodFiles(self.directory).predictions


@dataclass(frozen=True)
class MethodResults:
    """Every seed's run of one method, in the order of the seed list."""

    name: str
    runs: tuple[RunResults, ...]
    lr_selection: LrSelection | None = field(default=None)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(run.seed for run in self.runs)

    @property
    def registry_method(self) -> str:
        return self.runs[0].train.registry_method

    @property
    def backbone(self) -> str:
        return self.runs[0].train.backbone


def seed_directory(results: Path, method: str, seed: int) -> Path:
    return Path(results) / method / f"seed{seed}"


def load_run(directory: Path, method: str, seed: int) -> RunResults:
    """One run; train.json, metrics.json and predictions.jsonl are required, the curve optional."""
    files = MethodFiles(Path(directory))
    train = read_train_record(files.train_record, method)
    metrics = read_metrics(files.metrics, method)
    for path, record in ((files.train_record, train), (files.metrics, metrics)):
        if record.seed != seed:
            raise ResultsError(f"{path}: seed {record.seed}, expected {seed} (the seed{seed} directory)")
    predictions = tuple(read_predictions(files.predictions))
    curve = tuple(read_curve(files.train_curve)) if files.train_curve.is_file() else ()
    return RunResults(method=method, seed=seed, directory=Path(directory), train=train, metrics=metrics,
                      predictions=predictions, curve=curve)


def load_method(results: Path, method: str, seeds: Sequence[int]) -> MethodResults:
    """Every seed of one method under results/{method}/seed{seed}/."""
    if not seeds:
        raise ValueError(f"{method}: expected at least one seed")
    runs = tuple(load_run(seed_directory(results, method, seed), method, seed) for seed in seeds)
    selection_path = Path(results) / method / LR_SELECTION
    selection = read_lr_selection(selection_path, method) if selection_path.is_file() else None
    return MethodResults(name=method, runs=runs, lr_selection=selection)


def load_results(results: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[MethodResults]:
    return [load_method(results, method, seeds) for method in methods]


PREFERRED_SETS = ("test", "seen")


def evaluation_sets(results: Sequence[MethodResults]) -> list[str]:
    """test and seen first, then any other evaluated set, in a stable order."""
    present = {name for r in results for run in r.runs for name in run.metrics.sets}
    return [s for s in PREFERRED_SETS if s in present] + sorted(present - set(PREFERRED_SETS))
