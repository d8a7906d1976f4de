"""The report's inputs: every method's runs (one per seed), read through cfqa.contract from
results/{method}/seed{seed}/, the method's learning-rate selection when the `tune` stage
wrote one (results/{method}/lr_selection.json), and the Snakemake benchmark records of the
run's train and evaluate jobs when Snakemake wrote them (logs/benchmarks/..., beside results/).

Results of other runs (another params file, e.g. the GPT-Neo profile's `runs/<name>/results`)
join the report through `load_report_results`: when they hold more than one model family, every
method carries its family and the report sets the families side by side."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import dataclasses

from cfqa.scoring import metrics as metric_registry
from cfqa.contract import (BenchmarkRow, CurveRow, LrSelection, MethodFiles, MetricsRecord,
                           QuestionScores, ResultsError, TrainRecord, read_benchmark, read_curve, read_lr_selection,
                           read_metrics, read_question_scores, read_train_record)
from cfqa.layout import RunLayout, seed_of


@dataclass(frozen=True)
class RunResults:
    """One trained model: one method with one seed."""

    method: str
    seed: int
    directory: Path
    train: TrainRecord
    metrics: MetricsRecord
    questions: tuple[QuestionScores, ...]   # per_question.jsonl: every metric per question, scored by evaluate
    curve: tuple[CurveRow, ...] = ()   # empty when train_curve.csv is absent
    # Snakemake's benchmark rows of this run's jobs, by stage (train, evaluate); a stage is
    # absent when its file is (runs made by DVC or by hand have none).
    benchmarks: dict[str, tuple[BenchmarkRow, ...]] = field(default_factory=dict)

    @property
    def questions_path(self) -> Path:
        return MethodFiles(self.directory).per_question


@dataclass(frozen=True)
class MethodResults:
    """Every seed's run of one method, in the order of the seed list."""

    name: str
    runs: tuple[RunResults, ...]
    lr_selection: LrSelection | None = field(default=None)
    # The model family, set only when the report holds several (see `with_families`).
    family: str | None = None
    # Snakemake's benchmark rows of the run's pretrain job (one per run root, shared by its
    # methods); empty without the file.
    pretrain_benchmark: tuple[BenchmarkRow, ...] = ()

    @property
    def key(self) -> str:
        """Unique among the report's methods: the name, prefixed by the family when set."""
        return self.name if self.family is None else f"{self.family}/{self.name}"

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(run.seed for run in self.runs)

    @property
    def registry_method(self) -> str:
        return self.runs[0].train.registry_method

    @property
    def backbone(self) -> str:
        return self.runs[0].train.backbone


BENCHMARKED_STAGES = ("train", "evaluate")


def load_pretrain_benchmark(layout: RunLayout) -> tuple[BenchmarkRow, ...]:
    path = layout.benchmark("pretrain")
    return tuple(read_benchmark(path)) if path.is_file() else ()


def load_benchmarks(layout: RunLayout, method: str, seed: int) -> dict[str, tuple[BenchmarkRow, ...]]:
    paths = {name: layout.benchmark(name, method, seed) for name in BENCHMARKED_STAGES}
    return {name: tuple(read_benchmark(path)) for name, path in paths.items() if path.is_file()}


def load_run(layout: RunLayout, method: str, seed: int) -> RunResults:
    """One run of the run root `layout`; train.json, metrics.json and per_question.jsonl are
    required, the curve and the benchmark records optional."""
    files = MethodFiles(layout.run_results(method, seed))
    directory = files.directory
    train = read_train_record(files.train_record, method)
    metrics = read_metrics(files.metrics, method, registry=metric_registry.registered())
    for path, record in ((files.train_record, train), (files.metrics, metrics)):
        if record.seed != seed:
            raise ResultsError(f"{path}: seed {record.seed}, expected {seed} (the seed{seed} directory)")
    questions = tuple(read_question_scores(files.per_question, [m.name for m in metric_registry.registered()],
                                           method, seed))
    curve = tuple(read_curve(files.train_curve)) if files.train_curve.is_file() else ()
    return RunResults(method=method, seed=seed, directory=directory, train=train, metrics=metrics,
                      questions=questions, curve=curve,
                      benchmarks=load_benchmarks(layout, method, seed))


def load_method(layout: RunLayout, method: str, seeds: Sequence[int]) -> MethodResults:
    """Every seed of one method of the run root `layout` (results/{method}/seed{seed}/)."""
    if not seeds:
        raise ValueError(f"{method}: expected at least one seed")
    runs = tuple(load_run(layout, method, seed) for seed in seeds)
    selection_path = layout.lr_selection(method)
    selection = read_lr_selection(selection_path, method) if selection_path.is_file() else None
    return MethodResults(name=method, runs=runs, lr_selection=selection,
                         pretrain_benchmark=load_pretrain_benchmark(layout))


def load_results(results: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[MethodResults]:
    """Every method and seed of the run whose results folder is `results`."""
    layout = RunLayout.of_results(results)
    return [load_method(layout, method, seeds) for method in methods]


def discovered_runs(results: Path) -> dict[str, tuple[int, ...]]:
    """Every (method, seeds) with an evaluated run under results/{method}/seed{seed}/, for a
    results root whose params file the report does not read (another run's)."""
    results = Path(results)
    if not results.is_dir():
        raise ResultsError(f"{results}: missing; expected the results directory of a pipeline run")
    found = {}
    for method in sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith(".")):
        seeds = sorted(seed for d in method.iterdir()
                       if d.is_dir() and (seed := seed_of(d.name)) is not None and MethodFiles(d).metrics.is_file())
        if seeds:
            found[method.name] = tuple(seeds)
    if not found:
        raise ResultsError(f"{results}: no evaluated run (expected {{method}}/seed{{seed}}/metrics.json)")
    return found


def family_of(result: MethodResults) -> str:
    """The model family every run of a method was evaluated with (metrics.json `family`)."""
    families = {run.metrics.family or "unknown" for run in result.runs}
    if len(families) != 1:
        paths = ", ".join(f"{MethodFiles(run.directory).metrics} ({run.metrics.family})" for run in result.runs)
        raise ResultsError(f"{result.name}: its seeds were evaluated with different model families: {paths}; "
                           "expected one family per method")
    return families.pop()


def with_families(results: Sequence[MethodResults]) -> list[MethodResults]:
    """Unchanged when every method has one model family (the default report). Otherwise each
    method carries its family, sorted by family, then method; two methods of one name and
    family (the same run included twice) are an error."""
    families = {id(r): family_of(r) for r in results}
    tagged = list(results)
    if len(set(families.values())) > 1:
        tagged = sorted((dataclasses.replace(r, family=families[id(r)]) for r in results),
                        key=lambda r: (r.family, r.name))
    seen: dict[str, MethodResults] = {}
    for r in tagged:
        if r.key in seen:
            raise ResultsError(f"{r.runs[0].directory.parent} and {seen[r.key].runs[0].directory.parent}: both hold "
                               f"method {r.name!r} of family {families[id(r)]}; a report holds each (family, "
                               "method) once: include each run's results once")
        seen[r.key] = r
    return tagged


def load_report_results(results: Path, methods: Sequence[str], seeds: Sequence[int],
                        others: Sequence[Path] = ()) -> list[MethodResults]:
    """This run's methods and seeds (from its params) and every evaluated run under each of
    `others` (other runs' results directories), families set side by side (`with_families`)."""
    loaded = load_results(results, methods, seeds)
    for other in others:
        layout = RunLayout.of_results(other)
        loaded += [load_method(layout, method, found) for method, found in discovered_runs(other).items()]
    return with_families(loaded)


PREFERRED_SETS = ("test", "seen")


def evaluation_sets(results: Sequence[MethodResults]) -> list[str]:
    """test and seen first, then any other evaluated set, in a stable order."""
    present = {name for r in results for run in r.runs for name in run.metrics.sets}
    return [s for s in PREFERRED_SETS if s in present] + sorted(present - set(PREFERRED_SETS))
