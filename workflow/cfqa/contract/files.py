"""Names, readers and writers of the result files the stages exchange. Producers write only
through these functions and consumers read only through them, so a file's shape is stated
once (records.py) and checked on every read.

Every write is atomic (temp file + rename). Every read error names the file, and the line
or field, and what was expected.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import msgspec

from cfqa.io.atomic_io import atomic_open, write_jsonl
from cfqa.contract.records import (SCHEMA_VERSION, VARIANT_FIXED_KEYS, BenchmarkRow, CurveRow, DataStats,
                                   EvaluationRun, Headline, LrSelection, MethodHeadline, MetricsFile, MetricsRecord,
                                   PredictionRow, QuestionScores, Record, Summary, TrainRecord)
from cfqa.errors import BadInput

# File names inside a run's results/{method}/seed{seed}/ and models/{method}/seed{seed}/: the
# run layout names them (cfqa.layout), with every other path of a run.
from cfqa.layout import (EVALUATION_RUN, HEADLINE, LR_SELECTION_FILE as LR_SELECTION, METRICS, PER_QUESTION,
                         PREDICTIONS, TRAIN_CURVE, TRAIN_RECORD, WEIGHTS)

CURVE_COLUMNS = tuple(CurveRow.__struct_fields__)

R = TypeVar("R", bound=Record)
Row = TypeVar("Row")


class ResultsError(BadInput, ValueError):
    """A result file is missing or does not have the expected shape."""


@dataclass(frozen=True)
class MethodFiles:
    """Where one run's results live (results/{method}/seed{seed}/)."""

    directory: Path

    @property
    def train_record(self) -> Path:
        return self.directory / TRAIN_RECORD

    @property
    def train_curve(self) -> Path:
        return self.directory / TRAIN_CURVE

    @property
    def predictions(self) -> Path:
        return self.directory / PREDICTIONS

    @property
    def per_question(self) -> Path:
        return self.directory / PER_QUESTION

    @property
    def metrics(self) -> Path:
        return self.directory / METRICS

    @property
    def evaluation_run(self) -> Path:
        return self.directory / EVALUATION_RUN

    @property
    def headline(self) -> Path:
        return self.directory / HEADLINE


_ENCODER = msgspec.json.Encoder()


def _encode(record: Record) -> bytes:
    return msgspec.json.format(_ENCODER.encode(record), indent=2) + b"\n"


def write_record(path: str | Path, record: Record) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(_encode(record))


def read_record(path: str | Path, kind: type[R], produced_by: str) -> R:
    """A JSON record of type `kind`; `produced_by` names the command that writes it."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: missing; `{produced_by}` writes it")
    raw = path.read_bytes()
    try:
        version = msgspec.json.decode(raw, type=dict).get("schema_version")
    except msgspec.DecodeError as error:
        raise ResultsError(f"{path}: not a JSON object: {error}") from None
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema version {version}, this code reads {SCHEMA_VERSION}; "
                           f"rerun `{produced_by}`")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as error:
        raise ResultsError(f"{path}: {error} (expected a {kind.__name__}, see cfqa.contract.records)") from None


# ---- train.json, metrics.json, stats.json, summary.json ----------------------------------

def read_train_record(path: str | Path, method: str = "M", seed: int | str = "S") -> TrainRecord:
    return read_record(path, TrainRecord, f"cfqa train --method {method} --seed {seed}")


def read_metrics(path: str | Path, method: str = "M", seed: int | str = "S",
                 registry: Sequence[Any] | None = None) -> MetricsRecord:
    """metrics.json joined with the evaluation_run.json beside it: one evaluation. With
    `registry` (cfqa.scoring.metrics.registered()), its scores may hold only those metrics' fields."""
    path = Path(path)
    producer = f"cfqa evaluate --method {method} --seed {seed}"
    scores = read_record(path, MetricsFile, producer)
    if registry is not None:
        _check_metric_keys(path, scores, producer, registry)
    run_path = path.with_name(EVALUATION_RUN)
    execution = read_record(run_path, EvaluationRun, producer)
    if (execution.method, execution.seed) != (scores.method, scores.seed):
        raise ResultsError(f"{run_path}: method {execution.method!r} seed {execution.seed}, but {path} holds "
                           f"method {scores.method!r} seed {scores.seed}; rerun `{producer}`")
    return MetricsRecord(**msgspec.structs.asdict(scores), run=execution.run, inference=execution.inference,
                         wall_time_s=execution.wall_time_s)


# The metric registry (cfqa.scoring.metrics) is passed in, not imported: every stage reads this
# package, and a stage's code hash covers what it imports, so importing the registry here would
# make adding a metric rerun the data and training stages.

def _check_metric_keys(path: Path, scores: MetricsFile, producer: str, registered: Sequence[Any]) -> None:
    """Every set and variant (and answer type) holds `n` and only fields of the metric registry:
    the check a struct's forbid_unknown_fields makes, for scores keyed by the registry."""
    groups = [(f"sets.{s}.{v}", cell, {*VARIANT_FIXED_KEYS, *(m.field for m in registered)})
              for s, variants in scores.sets.items() for v, cell in variants.items()]
    groups += [(f"by_type.{s}.{v}.{t}", cell, {"n", *(m.field for m in registered if m.compared)})
               for s, variants in scores.by_type.items() for v, types in variants.items() for t, cell in types.items()]
    for where, cell, allowed in groups:
        unknown = sorted(set(cell) - allowed)
        if unknown or not isinstance(cell.get("n"), int):
            problem = f"unknown fields {unknown}" if unknown else "no integer `n`"
            raise ResultsError(f"{path}: `$.{where}`: {problem}; expected `n` and the metrics of cfqa.scoring.metrics "
                               f"({sorted(allowed - {'n'})}); rerun `{producer}`")


def write_metrics(path: str | Path, record: MetricsRecord) -> None:
    """metrics.json (scores) at `path` and evaluation_run.json (provenance and speed) beside
    it: DVC tracks the first, whose bytes an identical rerun repeats, and not the second."""
    path = Path(path)
    write_record(path.with_name(EVALUATION_RUN),
                 EvaluationRun(method=record.method, seed=record.seed, run=record.run, inference=record.inference,
                               wall_time_s=record.wall_time_s))
    write_record(path, MetricsFile(**{name: getattr(record, name) for name in MetricsFile.__struct_fields__}))


def read_headline(path: str | Path, method: str = "M", seed: int | str = "S") -> Headline:
    return read_record(path, Headline, f"cfqa evaluate --method {method} --seed {seed}")


# results/headline.json: method -> MethodHeadline, no other key (see MethodHeadline).
RunHeadline = dict[str, MethodHeadline]


def write_run_headline(path: str | Path, methods: RunHeadline) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(msgspec.json.format(_ENCODER.encode(methods), indent=2) + b"\n")


def read_run_headline(path: str | Path) -> RunHeadline:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: missing; `cfqa report` writes it")
    try:
        return msgspec.json.decode(path.read_bytes(), type=RunHeadline)
    except msgspec.DecodeError as error:
        raise ResultsError(f"{path}: {error} (expected method -> MethodHeadline, see cfqa.contract.records)") from None


def read_lr_selection(path: str | Path, method: str = "M") -> LrSelection:
    return read_record(path, LrSelection, f"cfqa tune --method {method}")


def read_data_stats(path: str | Path) -> DataStats:
    return read_record(path, DataStats, "cfqa counterfactuals")


def read_summary(path: str | Path) -> Summary:
    return read_record(path, Summary, "cfqa report")


# ---- train_curve.csv --------------------------------------------------------------------

def _csv_number(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def write_curve(path: str | Path, rows: Iterable[CurveRow]) -> None:
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CURVE_COLUMNS)
        for row in rows:
            writer.writerow([row.step, _csv_number(row.train_loss), _csv_number(row.val_loss)])


def _optional_float(text: str | None, path: Path, line: int, column: str) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        number = float(text)
    except ValueError:
        raise ResultsError(f"{path}:{line}: column {column!r}: expected a number, got {text!r}") from None
    return number if math.isfinite(number) else None


def read_curve(path: str | Path) -> list[CurveRow]:
    """train_curve.csv rows; val_loss is None where validation was not run at that step."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: missing; `cfqa train` writes it")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CURVE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ResultsError(f"{path}:1: expected columns {list(CURVE_COLUMNS)}, missing {missing}")
        rows = []
        for line, row in enumerate(reader, start=2):
            step = row["step"]
            if not (step or "").strip().isdigit():
                raise ResultsError(f"{path}:{line}: column 'step': expected an integer, got {step!r}")
            rows.append(CurveRow(step=int(step),
                                 train_loss=_optional_float(row["train_loss"], path, line, "train_loss"),
                                 val_loss=_optional_float(row["val_loss"], path, line, "val_loss")))
    return rows


# ---- predictions.jsonl ------------------------------------------------------------------

def write_predictions(path: str | Path, rows: Iterable[PredictionRow]) -> int:
    return write_jsonl(path, rows, encode=_ENCODER.encode)


def _jsonl_rows(path: Path, row_type: type[Row], producer: str, expected: str) -> Iterator[tuple[int, Row]]:
    """(line number, decoded row) of a JSON-lines result file, blank lines skipped; a missing
    file or a line that is not a `row_type` is a ResultsError naming the file and line."""
    if not path.is_file():
        raise ResultsError(f"{path}: missing; `{producer}` writes it")
    decoder = msgspec.json.Decoder(row_type)
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, decoder.decode(line)
            except msgspec.DecodeError as error:
                raise ResultsError(f"{path}:{number}: {error} (expected {expected})") from None


def read_predictions(path: str | Path) -> list[PredictionRow]:
    return [row for _, row in _jsonl_rows(Path(path), PredictionRow, "cfqa evaluate", "a PredictionRow")]


# ---- per_question.jsonl -----------------------------------------------------------------

def write_question_scores(path: str | Path, rows: Iterable[QuestionScores]) -> int:
    return write_jsonl(path, rows, encode=_ENCODER.encode)


def read_question_scores(path: str | Path, metric_names: Iterable[str], method: str = "M",
                         seed: int | str = "S") -> list[QuestionScores]:
    """The rows of per_question.jsonl; each must score exactly `metric_names` (the registry's,
    cfqa.scoring.metrics: a file written before a metric was added is stale, evaluate again)."""
    path = Path(path)
    producer = f"cfqa evaluate --method {method} --seed {seed}"
    expected = set(metric_names)
    rows = []
    for number, row in _jsonl_rows(path, QuestionScores, producer, "a QuestionScores row, see cfqa.contract.records"):
        if set(row.scores) != expected:
            missing, unknown = sorted(expected - set(row.scores)), sorted(set(row.scores) - expected)
            raise ResultsError(f"{path}:{number}: `scores` lacks {missing} and has unknown {unknown}; expected "
                               f"exactly the metrics of cfqa.scoring.metrics {sorted(expected)}; rerun `{producer}`")
        rows.append(row)
    return rows


# ---- logs/benchmarks/.../*.tsv (written by Snakemake, read by the report) --------------

# Snakemake's BenchmarkRecord columns this project reads; the file has more (h:m:s, max_vms,
# io_in, ...), and `benchmark_extended` adds some: they are ignored.
BENCHMARK_COLUMNS = ("s", "max_rss", "cpu_time")
_MIB = 1024 * 1024
_NOT_MEASURED = ("NA", "-", "")


def _benchmark_number(text: str | None, path: Path, line: int, column: str) -> float | None:
    if text is None or text.strip() in _NOT_MEASURED:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ResultsError(f"{path}:{line}: column {column!r}: expected a number or NA, got {text!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ResultsError(f"{path}:{line}: column {column!r}: expected a finite number >= 0, got {text!r}")
    return number


def read_benchmark(path: str | Path) -> list[BenchmarkRow]:
    """The rows of a Snakemake benchmark TSV (one per repetition; one without `repeat()`).
    Snakemake writes max_rss in MiB; the row holds bytes."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: missing; Snakemake writes it for a rule with `benchmark:`")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [c for c in BENCHMARK_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ResultsError(f"{path}:1: expected Snakemake's benchmark columns {list(BENCHMARK_COLUMNS)}, "
                               f"missing {missing}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise ResultsError(f"{path}:{line}: {len(reader.fieldnames) + len(row[None])} fields, "
                                   f"the header has {len(reader.fieldnames)}")
            seconds = _benchmark_number(row["s"], path, line, "s")
            if seconds is None:
                raise ResultsError(f"{path}:{line}: column 's': expected the job's seconds, got {row['s']!r}")
            rss = _benchmark_number(row["max_rss"], path, line, "max_rss")
            rows.append(BenchmarkRow(wall_time_s=seconds, max_rss_bytes=None if rss is None else round(rss * _MIB),
                                     cpu_time_s=_benchmark_number(row["cpu_time"], path, line, "cpu_time")))
    if not rows:
        raise ResultsError(f"{path}:2: expected a row of measurements after the header, found none")
    return rows
