"""The results contract: one module owns every file the stages exchange. Its readers check
what its writers wrote; no stage or the tracking layer reaches into another's modules."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from cfqa.config import PROJECT_ROOT
from cfqa.scoring import metrics as metric_registry
from cfqa.contract import (SCHEMA_VERSION, ResultsError, read_data_stats, read_metrics, read_predictions,
                           read_question_scores, read_train_record, write_predictions, write_question_scores,
                           write_record)
from cfqa.contract import records as records_module

PACKAGE = PROJECT_ROOT / "workflow" / "cfqa"
UNIT_SUFFIXES = ("_pct", "_bytes", "_s", "_per_s", "_ms", "_nats")


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
    for path in (PACKAGE / "tracking").glob("*.py"):
        assert not any(name.startswith("cfqa.report") for name in imported_modules(path)), path.name


def test_result_fields_name_their_units():
    """Every float field of a record says its unit, or is a loss or a count-like ratio."""
    # Losses and learning rates have no unit; Summary.methods maps summary keys that carry
    # their own suffixes; QuestionScores.scores maps metric names to one question's value, a
    # fraction (0-1).
    unitless = {"best_val_loss", "train_loss", "val_loss", "lr", "chosen_lr", "searched_lr_range", "methods",
                "scores"}
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
        # The train stage records each complete epoch's time (steps x batch over the examples).
        batch_size = yaml.safe_load(stage_results.params.read_text())["train"]["batch_size"]
        epochs = train.steps * batch_size // train.train_examples
        assert len(train.cost.epoch_times_s) == epochs > 0
        assert train.cost.max_epoch_time_s == max(train.cost.epoch_times_s) > 0
        n = sum(cell["n"] for cell_set in metrics.sets.values() for cell in cell_set.values())
        assert len(predictions) == n
        # Written again by the writers, the files are byte-identical (one encoding, fields in declaration order).
        write_record(tmp_path / "train.json", train)
        assert (tmp_path / "train.json").read_bytes() == (directory / "train.json").read_bytes()
        write_predictions(tmp_path / "p.jsonl", predictions)
        assert (tmp_path / "p.jsonl").read_bytes() == (directory / "predictions.jsonl").read_bytes()
        # One per-question record per prediction, in the same order, scoring every registered metric.
        names = [m.name for m in metric_registry.registered()]
        questions = read_question_scores(directory / "per_question.jsonl", names)
        assert [(q.set, q.variant, q.id) for q in questions] == [(p.set, p.variant, p.id) for p in predictions]
        write_question_scores(tmp_path / "q.jsonl", questions)
        assert (tmp_path / "q.jsonl").read_bytes() == (directory / "per_question.jsonl").read_bytes()
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


def _evaluation(wall_time_s: float, per_example_ms: float, seed: int = 0, commit: str = "abc"):
    from cfqa.contract import (Hardware, Inference, Memorization, MetricsRecord, RunInfo, TypeScores,
                               VariantScores)

    hardware = Hardware(device="cpu", cpu_model="test cpu", cpu_count=2, torch_threads=1, cpu_capability="AVX2",
                        blas="mkl")
    run = RunInfo(stage="evaluate", status="completed", git_commit=commit, git_dirty=False,
                  versions={"python": "3"}, hardware=hardware, params={"options": {"r": 8}})
    scores = VariantScores(n=20, contextual_em_pct=55.0, contextual_f1_pct=60.0, contextual_lenient_pct=58.0,
                           unanswerable_pct=0.0, well_formed_pct=100.0, parametric_em_pct=None,
                           parametric_f1_pct=None)
    return MetricsRecord(method="lora", seed=seed, run=run, sets={"test": {"factual": scores}},
                         by_type={"test": {"factual": {"LOC": TypeScores(n=20, contextual_em_pct=55.0,
                                                                         parametric_em_pct=None)}}},
                         memorization={"test": Memorization(n=20, original_pct=10.0, substitute_pct=30.0,
                                                            other_pct=60.0, memorization_ratio_pct=25.0)},
                         most_frequent_em_pct={"test": {"all": 5.0}},
                         inference=Inference(examples_per_s=1000 / per_example_ms, per_example_ms=per_example_ms,
                                             batch_size=8, num_beams=1),
                         wall_time_s=wall_time_s)


def test_run_info_and_timings_live_beside_metrics_so_a_rerun_writes_the_same_metrics_bytes(tmp_path):
    """An identical re-evaluation at another commit differs only in its provenance and
    timings: metrics.json (what DVC tracks) keeps its bytes, evaluation_run.json (what DVC
    does not track) changes, and read_metrics joins them."""
    from cfqa.contract import MethodFiles, write_metrics

    files = MethodFiles(tmp_path)
    write_metrics(files.metrics, _evaluation(wall_time_s=12.0, per_example_ms=4.0))
    first = files.metrics.read_bytes(), files.evaluation_run.read_bytes()
    write_metrics(files.metrics, _evaluation(wall_time_s=13.5, per_example_ms=4.4, commit="def"))
    assert files.metrics.read_bytes() == first[0]
    assert files.evaluation_run.read_bytes() != first[1]
    for varying in (b"wall_time_s", b"inference", b"git_commit", b"hardware"):
        assert varying not in files.metrics.read_bytes()
    joined = read_metrics(files.metrics, "lora")
    assert joined == _evaluation(wall_time_s=13.5, per_example_ms=4.4, commit="def")


def test_metrics_without_their_run_record_name_the_missing_file(tmp_path):
    from cfqa.contract import MethodFiles, write_metrics

    files = MethodFiles(tmp_path)
    write_metrics(files.metrics, _evaluation(wall_time_s=1.0, per_example_ms=1.0))
    files.evaluation_run.unlink()
    with pytest.raises(ResultsError, match=re.escape(f"{files.evaluation_run}: missing; `cfqa evaluate --method lora")):
        read_metrics(files.metrics, "lora")
    # Another run's record beside these metrics is refused, not joined.
    other = tmp_path / "other"
    other.mkdir()
    write_metrics(other / "metrics.json", _evaluation(wall_time_s=1.0, per_example_ms=1.0, seed=1))
    files.evaluation_run.write_bytes((other / "evaluation_run.json").read_bytes())
    with pytest.raises(ResultsError, match=r"evaluation_run\.json: method 'lora' seed 1, but .*metrics\.json holds "
                                           r"method 'lora' seed 0"):
        read_metrics(files.metrics, "lora")


def test_headline_reads_back_and_holds_a_handful_of_numbers(tmp_path):
    from cfqa.contract import Headline, read_headline
    from cfqa.analysis.headline import headline

    evaluation = _evaluation(wall_time_s=1.0, per_example_ms=1.0)
    trained = _trained(peak=2048, step_time_s=0.3, trainable=1234)
    record = headline(trained, evaluation)
    assert record == Headline(test_contextual_em_pct={"factual": 55.0}, memorization_ratio_pct={"test": 25.0},
                              trainable_params=1234, peak_memory_bytes=2048, step_time_s=0.3)
    write_record(tmp_path / "headline.json", record)
    assert read_headline(tmp_path / "headline.json") == record
    flat = json.loads((tmp_path / "headline.json").read_text())
    assert sum(len(v) if isinstance(v, dict) else 1 for v in flat.values()) <= 12


def _trained(peak: int, step_time_s: float, trainable: int):
    """A TrainRecord with the cost fields the headline reads (the rest: plausible values)."""
    from cfqa.contract import ParameterCounts, StepMemoryParts, TrainCost, TrainRecord

    evaluation = _evaluation(wall_time_s=1.0, per_example_ms=1.0)
    parts = StepMemoryParts(parameters_bytes=1, gradients_bytes=1, optimizer_state_bytes=2, activations_bytes=4,
                            sum_bytes=8)
    cost = TrainCost(step_memory=parts, peak_memory_bytes=peak, peak_memory_measure="rss_growth",
                     step_time_s=step_time_s, train_examples_per_s=10.0, checkpoint_bytes=100, train_time_s=5.0,
                     wall_time_s=6.0, processes=1)
    return TrainRecord(method="lora", registry_method="lora", backbone="base", seed=0, lr=1e-3, lr_selected=False,
                       run=evaluation.run, params=ParameterCounts(trainable=trainable, total=10000, trainable_pct=12.34),
                       cost=cost, steps=10, best_step=10, best_val_loss=1.0, stopped_early=False,
                       resumed_from_step=None, train_examples=100, validation_examples=10)


# Snakemake 9's benchmark file: a header and one row per repetition (BenchmarkRecord.to_tsv).
BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_a_snakemake_benchmark_file_reads_as_seconds_bytes_and_cpu_seconds(tmp_path):
    from cfqa.contract import BenchmarkRow, read_benchmark

    path = tmp_path / "seed0.tsv"
    path.write_text(BENCHMARK_HEADER + "42.1234\t0:00:42\t512.50\t900.00\t500.00\t505.00\t1.00\t2.00\t95.00\t40.12\n"
                    "3.0000\t0:00:03\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")
    assert read_benchmark(path) == [
        BenchmarkRow(wall_time_s=42.1234, max_rss_bytes=round(512.5 * 1024 * 1024), cpu_time_s=40.12),
        BenchmarkRow(wall_time_s=3.0, max_rss_bytes=None, cpu_time_s=None)]   # NA: nothing was sampled


@pytest.mark.parametrize("text, message", [
    (BENCHMARK_HEADER + "12.0\t0:00:12\tlots\t1\t1\t1\t1\t1\t1\t1\n",
     r"seed0\.tsv:2: column 'max_rss': expected a number or NA, got 'lots'"),
    (BENCHMARK_HEADER + "1.0\t0:00:01\t1\t1\t1\t1\t1\t1\t1\t1\nNA\t-\t1\t1\t1\t1\t1\t1\t1\t1\n",
     r"seed0\.tsv:3: column 's': expected the job's seconds, got 'NA'"),
    (BENCHMARK_HEADER + "1.0\t0:00:01\t1\t1\t1\t1\t1\t1\t1\t1\textra\n", r"seed0\.tsv:2: 11 fields, the header has 10"),
    ("seconds\tmax_rss\n1\t2\n", r"seed0\.tsv:1: expected Snakemake's benchmark columns .* missing \['s', 'cpu_time'\]"),
    (BENCHMARK_HEADER, r"seed0\.tsv:2: expected a row of measurements after the header"),
])
def test_a_malformed_benchmark_file_is_named_with_its_line(tmp_path, text, message):
    from cfqa.contract import read_benchmark

    (tmp_path / "seed0.tsv").write_text(text)
    with pytest.raises(ResultsError, match=message):
        read_benchmark(tmp_path / "seed0.tsv")
    with pytest.raises(ResultsError, match=r"missing\.tsv: missing; Snakemake writes it"):
        read_benchmark(tmp_path / "missing.tsv")


def test_a_snakemake_benchmark_is_read_back_as_snakemake_writes_it(tmp_path):
    """The reader against Snakemake's own writer, not a hand-written copy of its format."""
    from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

    from cfqa.contract import read_benchmark

    measured = BenchmarkRecord(max_rss=300.0, cpu_time=2.5)
    measured.running_time, measured.data_collected = 4.25, True
    unsampled = BenchmarkRecord()
    unsampled.running_time = 0.5
    write_benchmark_records([measured, unsampled], str(tmp_path / "b.tsv"), False)
    rows = read_benchmark(tmp_path / "b.tsv")
    assert [(r.wall_time_s, r.max_rss_bytes, r.cpu_time_s) for r in rows] == [
        (4.25, 300 * 1024 * 1024, 2.5), (0.5, None, None)]
