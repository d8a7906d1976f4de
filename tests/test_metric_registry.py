"""The metric registry (cfqa.scoring.metrics) is the one declaration of a metric: a metric added to the
table alone is scored per question, written to per_question.jsonl and metrics.json, accepted by
the contract's readers, logged to MLflow (metrics.json flattened), and shown in the report's
accuracy, comparison and answer-type tables and in summary.json. The per-question record is
checked where it is read, with the file and line of a bad row."""
from __future__ import annotations

import json
import re
import shutil

import msgspec
import numpy as np
import pytest

from cfqa.scoring import metrics
from cfqa.scoring.answer_metrics import normalize_answer
from cfqa.contract import (Hardware, Inference, MethodFiles, MetricsRecord, PredictionRow, ResultsError, RunInfo,
                           read_metrics, read_predictions, read_question_scores, read_summary, write_metrics,
                           write_question_scores)
from cfqa.evaluation.scoring import question_scores, score_set
from cfqa.formats import UNANSWERABLE


def _first_token(row: PredictionRow, _target_format: str) -> float:
    """1 when the contextual answer starts with the first word of a gold answer."""
    first = lambda text: (normalize_answer(text).split() or [""])[0]
    return float(any(first(row.contextual) == first(gold) for gold in row.gold_contextual))


FIRST_TOKEN = metrics.Metric("contextual_first_token", "contextual first-token match",
                             "First-token match: the contextual answer starts with a gold answer's first word.",
                             _first_token, compared=True)


@pytest.fixture
def extra_metric(monkeypatch) -> metrics.Metric:
    """The registry with one more metric, and nothing else changed."""
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, FIRST_TOKEN))
    return FIRST_TOKEN


def _row(variant: str, contextual: str, golds: list[str], answer_type: str = "LOCATION", question: str = "q",
         parametric: str | None = None, substitute: str | None = None) -> PredictionRow:
    return PredictionRow(id=question, set="test", variant=variant, answer_type=answer_type,
                         prediction=f"contextual: {contextual}", contextual=contextual, parametric=parametric,
                         gold_contextual=golds, gold_parametric=["Paris"], substitute=substitute)


ROWS = [
    _row("factual", "new york city", ["new york"], question="a"),           # first token matches, EM 0
    _row("factual", "Paris", ["Paris"], question="b", answer_type="PERSON"),  # both match
    _row("factual", "york", ["new york"], question="c"),                     # neither
    _row("counterfactual", "Lyon", ["Lyon"], question="a", substitute="Lyon"),
    _row("empty", "unanswerable", [UNANSWERABLE], question="a"),
]


def test_an_added_metric_is_scored_written_read_and_logged(extra_metric, tmp_path):
    questions = question_scores(ROWS, "single")
    assert [q.scores["contextual_first_token"] for q in questions] == [1.0, 1.0, 0.0, 1.0, 1.0]
    variants, by_type = score_set(ROWS, "single")
    assert variants["factual"]["contextual_first_token_pct"] == pytest.approx(200 / 3)
    assert variants["factual"]["contextual_em_pct"] == pytest.approx(100 / 3)
    # Compared metrics are also scored per answer type.
    assert by_type["factual"]["LOCATION"]["contextual_first_token_pct"] == 50.0
    assert by_type["factual"]["PERSON"]["contextual_first_token_pct"] == 100.0
    # Both files the evaluate stage writes hold it, and the contract's readers accept it.
    files = MethodFiles(tmp_path)
    write_question_scores(files.per_question, questions)
    names = [m.name for m in metrics.registered()]
    assert read_question_scores(files.per_question, names) == questions
    write_metrics(files.metrics, _evaluation(variants, by_type))
    record = read_metrics(files.metrics, registry=metrics.registered())
    assert record.sets["test"]["factual"]["contextual_first_token_pct"] == pytest.approx(200 / 3)
    # MLflow logs metrics.json flattened (cfqa.tracking.results_dir): the new field is a run metric.
    from cfqa.tracking.values import flatten

    logged = flatten(msgspec.to_builtins(record))
    assert logged["sets.test.factual.contextual_first_token_pct"] == pytest.approx(200 / 3)
    assert logged["by_type.test.factual.PERSON.contextual_first_token_pct"] == 100.0


def test_group_value_counts_a_missing_answer_as_wrong_and_none_without_answers():
    parametric = metrics.metric("parametric_em")
    assert parametric.group_value([1.0, None, 0.0, 1.0]) == 50.0
    assert parametric.group_value([None, None]) is None and parametric.group_value([]) is None
    assert metrics.Metric("chars", "chars", "", lambda row, _: 3.0, percent=False).group_value([1.0, 2.0]) == 1.5
    with pytest.raises(ValueError, match="compared metric must be a percentage"):
        metrics.Metric("chars", "chars", "", lambda row, _: 3.0, percent=False, compared=True)


def _evaluation(variants, by_type) -> MetricsRecord:
    hardware = Hardware(device="cpu", cpu_model="test cpu", cpu_count=2, torch_threads=1, cpu_capability="AVX2",
                        blas="mkl")
    run = RunInfo(stage="evaluate", status="completed", git_commit="abc", git_dirty=False, versions={},
                  hardware=hardware, params={})
    return MetricsRecord(method="lora", seed=0, run=run, sets={"test": variants}, by_type={"test": by_type},
                         memorization={}, most_frequent_em_pct={},
                         inference=Inference(examples_per_s=10.0, per_example_ms=100.0, batch_size=8, num_beams=1),
                         wall_time_s=1.0)


def test_per_question_rows_are_checked_with_file_and_line(tmp_path):
    path = tmp_path / "per_question.jsonl"
    names = [m.name for m in metrics.registered()]
    with pytest.raises(ResultsError, match=r"per_question\.jsonl: missing; `cfqa evaluate --method lora --seed 1`"):
        read_question_scores(path, names, "lora", 1)
    write_question_scores(path, question_scores(ROWS, "single"))
    lines = path.read_bytes().splitlines()
    good = json.loads(lines[0])
    for bad, expected in (
            ({**good, "scores": {**good["scores"], "contextual_em": "yes"}},
             r":2: Expected `float \| null`, got `str` - at `\$\.scores\[\.\.\.\]`"),
            ({**good, "memorization": "maybe"}, r":2: Invalid enum value 'maybe' - at `\$\.memorization`"),
            ({**good, "scores": {"contextual_em": 1.0}},
             r":2: `scores` lacks \['contextual_f1', .*rerun `cfqa evaluate"),
            ({**good, "scores": {**good["scores"], "bleu": 1.0}}, r":2: .*has unknown \['bleu'\]")):
        path.write_bytes(lines[0] + b"\n" + json.dumps(bad).encode() + b"\n")
        with pytest.raises(ResultsError, match=re.escape(str(path)) + expected):
            read_question_scores(path, names)


def test_metrics_json_may_lack_a_newer_metric_but_not_hold_an_unknown_one(tmp_path):
    variants, by_type = score_set(ROWS, "single")
    files = MethodFiles(tmp_path)
    older = {variant: {k: v for k, v in scores.items() if "rouge" not in k} for variant, scores in variants.items()}
    write_metrics(files.metrics, _evaluation(older, by_type))
    record = read_metrics(files.metrics, registry=metrics.registered())
    assert record.sets["test"]["factual"].get("contextual_rouge_l_pct") is None
    renamed = {**variants, "factual": {**variants["factual"], "contextual_bleu_pct": 1.0}}
    write_metrics(files.metrics, _evaluation(renamed, by_type))
    with pytest.raises(ResultsError, match=r"metrics\.json: `\$\.sets\.test\.factual`: unknown fields "
                                           r"\['contextual_bleu_pct'\]"):
        read_metrics(files.metrics, registry=metrics.registered())


@pytest.mark.slow
def test_an_added_metric_reaches_the_report_and_summary(extra_metric, stage_results, tmp_path):
    """The stages' real runs evaluated again with one more metric in the registry: the report
    shows it, and summary.json holds it, with no other edit."""
    from cfqa import config as config_module
    from cfqa.dag import RUN_RESULTS
    from cfqa.stages import report as report_stage
    from stage_results import run_stage, working_directory

    for part in ("data", "results", "models"):
        shutil.copytree(stage_results.root / part, tmp_path / part)
    with working_directory(tmp_path):
        for method in stage_results.methods:
            for seed in stage_results.seeds:
                run_stage("evaluate", stage_results.params, method=method, seed=seed)
    cfg = config_module.load([stage_results.params])
    out, summary = tmp_path / "reports", tmp_path / "summary.json"
    report_stage.run(cfg, results=tmp_path / "results", data_stats=tmp_path / "data/stats.json", out=out,
                     summary=summary)

    per_seed = {}
    for method in stage_results.methods:
        values = []
        for seed in stage_results.seeds:
            directory = tmp_path / RUN_RESULTS.format(method=method, seed=seed)
            predictions = [r for r in read_predictions(directory / "predictions.jsonl")
                           if (r.set, r.variant) == ("test", "factual")]
            # Scored here from the predictions, independently of the evaluate stage.
            values.append([_first_token(r, "") for r in predictions])
            written = [q for q in read_question_scores(directory / "per_question.jsonl",
                                                       [m.name for m in metrics.registered()])
                       if (q.set, q.variant) == ("test", "factual")]
            assert [q.scores["contextual_first_token"] for q in written] == values[-1]
        per_seed[method] = np.array(values)

    from cfqa.analysis import statistics

    text = (out / "report.md").read_text()
    assert "contextual first-token match (%)" in text                       # accuracy table column
    assert "Δ contextual first-token match (pp)" in text                    # comparison with full
    assert "factual contextual first-token match (%)" in text               # answer-type table
    assert "First-token match: the contextual answer starts with" in text   # its caption
    methods = read_summary(summary).methods
    for method, values in per_seed.items():
        interval = statistics.mean_interval(values)
        assert methods[method]["test_factual_contextual_first_token_pct"] == pytest.approx(interval.estimate)
        assert methods[method]["test_factual_contextual_first_token_pct_low"] == pytest.approx(interval.low)
        # ROUGE, scored before but in no table or summary, is in both.
        assert "test_factual_contextual_rouge_l_pct" in methods[method]
    assert "contextual ROUGE-L (%)" in text
