"""The metric registry: every score of a generated answer, declared once.

Each entry of `METRICS` says how one question is scored from its prediction and gold
answers, how the report names and explains it, and whether it is a percentage. Everything
downstream iterates over this table instead of naming metrics:

- the evaluate stage scores every question once (`cfqa.evaluation.scoring`), writes the values
  per question to `per_question.jsonl` and their means per set and variant to metrics.json
  (field `{name}_pct`, or `{name}` when not a percentage);
- the contract (`cfqa.contract`) accepts exactly these fields where it reads those files;
- the report's accuracy table, summary.json and, for `compared` metrics, the intervals over
  seeds and questions, the paired comparisons and the answer-type tables;
- MLflow, which logs metrics.json field by field (`sets.<set>.<variant>.<field>`).

Adding a metric is one entry here (and its per-question function, here or in
cfqa.scoring.answer_metrics). This module sits beside cfqa.scoring.answer_metrics, below the evaluation and
the report, because the report may not import cfqa.evaluation (pyproject's import contracts).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from cfqa.scoring.answer_metrics import best_f1, exact_match, lenient_match, normalize_answer
from cfqa.formats import UNANSWERABLE, is_well_formed

# (a cfqa.contract.PredictionRow, the run's target format) -> the question's value, 0-1 (a
# match is 1.0); None: the prediction has no answer for this metric to score (no parametric
# line), see `Metric.group_value`. The contract imports this table, so it is not imported here.
QuestionScore = Callable[[Any, str], "float | None"]


@dataclass(frozen=True)
class Metric:
    name: str                 # the key in per_question.jsonl's `scores`
    label: str                # the report's column name ("contextual EM")
    description: str          # the report's caption sentence: what a value means
    score: QuestionScore      # (prediction row, the run's target format) -> the question's value
    percent: bool = True      # a share: metrics.json holds 100 × the mean, as `{name}_pct`
    # Compared per question across seeds (cfqa.report.aggregate): a t interval over seeds and
    # questions, the paired difference with full fine-tuning, per answer type. Otherwise the
    # report shows the seed mean of metrics.json's value.
    compared: bool = False

    def __post_init__(self) -> None:
        if self.compared and not self.percent:
            # cfqa.analysis.statistics reports intervals and differences of 0/1-scaled values in percentage points.
            raise ValueError(f"metric {self.name!r}: a compared metric must be a percentage")

    @property
    def field(self) -> str:
        """The metrics.json and summary.json field (with the contract's unit suffix)."""
        return f"{self.name}_pct" if self.percent else self.name

    def group_value(self, values: Sequence[float | None]) -> float | None:
        """The value of a group of questions: their mean (× 100 for a percentage). A question
        without an answer to score counts as wrong (0); a group where no question has one, or
        an empty group, has no value (None)."""
        if all(value is None for value in values):
            return None
        total = sum(0.0 if value is None else value for value in values)
        # 100 × total / n in this order: the same float as the shares metrics.json always held.
        return 100.0 * total / len(values) if self.percent else total / len(values)


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@functools.cache
def _rouge():
    # rouge-score's own tokenizer (lower case; runs of ASCII letters and digits), as published
    # ROUGE numbers use it; no stemming, so "American" and "Americans" stay different answers.
    # Imported here: rouge-score pulls in nltk, which readers of this table do not need.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)


@functools.lru_cache(maxsize=4096)
def _best_rouge(prediction: str, golds: tuple[str, ...]) -> dict[str, float]:
    if not golds:
        return dict.fromkeys(ROUGE_TYPES, 0.0)
    scores = _rouge().score_multi(list(golds), prediction)
    return {kind: scores[kind].fmeasure for kind in ROUGE_TYPES}


def best_rouge(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (0-1) of `prediction` against the gold answer
    that scores best, per type (rouge-score's score_multi); 0 with no gold answer."""
    return dict(_best_rouge(prediction, tuple(golds)))


def _parametric(score: Callable[[str, Sequence[str]], float]) -> QuestionScore:
    return lambda row, _: None if row.parametric is None else float(score(row.parametric, row.gold_parametric))


def _contextual_rouge(kind: str) -> QuestionScore:
    return lambda row, _: _best_rouge(row.contextual, tuple(row.gold_contextual))[kind]


# The order is metrics.json's field order (and the accuracy table's, compared metrics first).
METRICS: tuple[Metric, ...] = (
    Metric("contextual_em", "contextual EM",
           "Contextual: the answer the context supports (\"unanswerable\" for empty and random contexts); "
           "EM: exact match after SQuAD normalization.",
           lambda row, _: float(exact_match(row.contextual, row.gold_contextual)), compared=True),
    Metric("contextual_f1", "contextual F1", "F1: token overlap with the best gold answer.",
           lambda row, _: best_f1(row.contextual, row.gold_contextual)),
    Metric("contextual_lenient", "contextual lenient",
           "Lenient: EM, or one answer's tokens contain the other's.",
           lambda row, _: float(lenient_match(row.contextual, row.gold_contextual))),
    Metric("unanswerable", "unanswerable", "Unanswerable: the contextual answer is \"unanswerable\".",
           lambda row, _: float(normalize_answer(row.contextual) == UNANSWERABLE)),
    Metric("well_formed", "well-formed",
           "Well-formed: the generation has every answer line the target format asks for.",
           lambda row, target_format: float(is_well_formed(row.prediction, target_format))),
    Metric("parametric_em", "parametric EM",
           "Parametric: the original answer (a missing parametric answer counts as wrong).",
           _parametric(exact_match), compared=True),
    Metric("parametric_f1", "parametric F1", "Parametric F1: token F1 of the parametric answer.",
           _parametric(best_f1)),
    Metric("contextual_rouge1", "contextual ROUGE-1",
           "ROUGE-1: unigram F-measure of the contextual answer against the best gold answer "
           "(rouge-score's tokenizer, no stemming).", _contextual_rouge("rouge1")),
    Metric("contextual_rouge2", "contextual ROUGE-2", "ROUGE-2: the same over bigrams.",
           _contextual_rouge("rouge2")),
    Metric("contextual_rouge_l", "contextual ROUGE-L", "ROUGE-L: the same over the longest common subsequence.",
           _contextual_rouge("rougeL")),
)


def registered() -> tuple[Metric, ...]:
    """Every metric, read at call time (a test may extend the table)."""
    return METRICS


def compared_metrics() -> tuple[Metric, ...]:
    return tuple(metric for metric in METRICS if metric.compared)


def seed_mean_metrics() -> tuple[Metric, ...]:
    return tuple(metric for metric in METRICS if not metric.compared)


def metric(name: str) -> Metric:
    found = next((m for m in METRICS if m.name == name), None)
    if found is None:
        raise KeyError(f"no metric {name!r}; the registry (cfqa.scoring.metrics) has {[m.name for m in METRICS]}")
    return found
