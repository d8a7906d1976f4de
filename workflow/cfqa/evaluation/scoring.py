"""Scores for one method: per question set and variant, per answer type, memorization on
counterfactual contexts, and the most-frequent-answer baseline. Pure functions over rows;
results are the typed records of cfqa.contract, every share in percent (`_pct`)."""
from __future__ import annotations

import functools
from collections import Counter, defaultdict
from typing import Iterable

from rouge_score import rouge_scorer

from cfqa.answer_metrics import (best_f1, exact_match, lenient_match, memorization_class,
                                 memorization_ratio, normalize_answer)
from cfqa.contract import Memorization, PredictionRow, TypeScores, VariantScores
from cfqa.formats import UNANSWERABLE, is_well_formed, parse_generation


def gold_contextual(row: dict) -> list[str]:
    """What the context says: every gold answer for factual contexts, the substitute for
    counterfactual ones, "unanswerable" for empty and random ones."""
    if row["variant"] == "factual":
        return list(row["answers"])
    return [row["contextual_answer"]]


def prediction_record(row: dict, set_name: str, generation: str) -> PredictionRow:
    parsed = parse_generation(generation)
    return PredictionRow(
        id=row["id"], set=set_name, variant=row["variant"], answer_type=row.get("answer_type"),
        prediction=generation, contextual=parsed.contextual, parametric=parsed.parametric,
        gold_contextual=gold_contextual(row), gold_parametric=list(row["answers"]),
        substitute=row.get("substitute"),
    )


def _percent(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@functools.cache
def _rouge() -> rouge_scorer.RougeScorer:
    # rouge-score's own tokenizer (lower case; runs of ASCII letters and digits), as published
    # ROUGE numbers use it; no stemming, so "American" and "Americans" stay different answers.
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)


def best_rouge(prediction: str, golds: list[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (0-1) of `prediction` against the gold answer
    that scores best, per type (rouge-score's score_multi); 0 with no gold answer."""
    if not golds:
        return dict.fromkeys(ROUGE_TYPES, 0.0)
    scores = _rouge().score_multi(golds, prediction)
    return {kind: scores[kind].fmeasure for kind in ROUGE_TYPES}


def score_records(records: list[PredictionRow], target_format: str) -> VariantScores:
    has_parametric = any(r.parametric is not None for r in records)
    parametric_em = parametric_f1 = None
    if has_parametric:
        parametric_em = _percent([exact_match(r.parametric or "", r.gold_parametric) for r in records])
        parametric_f1 = _percent([best_f1(r.parametric or "", r.gold_parametric) for r in records])
    rouge = [best_rouge(r.contextual, r.gold_contextual) for r in records]
    return VariantScores(
        n=len(records),
        contextual_em_pct=_percent([exact_match(r.contextual, r.gold_contextual) for r in records]),
        contextual_f1_pct=_percent([best_f1(r.contextual, r.gold_contextual) for r in records]),
        contextual_lenient_pct=_percent([lenient_match(r.contextual, r.gold_contextual) for r in records]),
        unanswerable_pct=_percent([normalize_answer(r.contextual) == UNANSWERABLE for r in records]),
        parametric_em_pct=parametric_em, parametric_f1_pct=parametric_f1,
        well_formed_pct=_percent([is_well_formed(r.prediction, target_format) for r in records]),
        contextual_rouge1_pct=_percent([scores["rouge1"] for scores in rouge]),
        contextual_rouge2_pct=_percent([scores["rouge2"] for scores in rouge]),
        contextual_rouge_l_pct=_percent([scores["rougeL"] for scores in rouge]),
    )


def memorization(records: list[PredictionRow]) -> Memorization:
    """Longpre et al. on counterfactual contexts: does the contextual answer follow the
    substitute (the context), the original (memory), or neither? The ratio pooled over every
    counterfactual question, and over those whose factual version (the same question id, in
    `records`) was answered correctly."""
    labelled = [(r.id, memorization_class(r.contextual, r.gold_parametric, r.substitute))
                for r in records if r.variant == "counterfactual" and r.substitute]
    classes = Counter(label for _, label in labelled)
    total = sum(classes.values())
    share = {name: (100.0 * classes[name] / total if total else None) for name in ("original", "substitute", "other")}
    ratio = memorization_ratio(classes["original"], classes["substitute"])
    known_ids = {r.id for r in records if r.variant == "factual" and exact_match(r.contextual, r.gold_contextual)}
    known = Counter(label for question, label in labelled if question in known_ids)
    known_ratio = memorization_ratio(known["original"], known["substitute"])
    return Memorization(n=total, original_pct=share["original"], substitute_pct=share["substitute"],
                        other_pct=share["other"],
                        memorization_ratio_pct=None if ratio is None else 100.0 * ratio,
                        known_n=sum(known.values()),
                        known_memorization_ratio_pct=None if known_ratio is None else 100.0 * known_ratio)


def most_frequent_answers(training_rows: Iterable[dict]) -> dict[str, str]:
    """The most frequent training answer per answer type, and over all types ("all")."""
    by_type: dict[str, Counter] = defaultdict(Counter)
    for row in training_rows:
        answer = normalize_answer(row["answers"][0])
        by_type[row.get("answer_type") or "untyped"][answer] += 1
        by_type["all"][answer] += 1
    return {kind: counts.most_common(1)[0][0] for kind, counts in by_type.items()}


def baseline_scores(records: list[PredictionRow], frequent: dict[str, str]) -> dict[str, float | None]:
    """Contextual EM (percent) on factual contexts when always answering the most frequent
    training answer of the question's type (types known: an upper bound for a frequency
    baseline)."""
    factual = [r for r in records if r.variant == "factual"]
    result = {"all": _percent([exact_match(frequent["all"], r.gold_contextual) for r in factual])}
    for kind in sorted({r.answer_type or "untyped" for r in factual}):
        rows = [r for r in factual if (r.answer_type or "untyped") == kind]
        guess = frequent.get(kind, frequent["all"])
        result[kind] = _percent([exact_match(guess, r.gold_contextual) for r in rows])
    return result


def score_set(records: list[PredictionRow], target_format: str) -> tuple[dict[str, VariantScores], dict[str, dict[str, TypeScores]]]:
    """(per-variant scores, per-variant-and-type scores) for one question set."""
    by_variant: dict[str, list[PredictionRow]] = defaultdict(list)
    for record in records:
        by_variant[record.variant].append(record)
    variants = {variant: score_records(rows, target_format) for variant, rows in by_variant.items()}
    by_type = {}
    for variant, rows in by_variant.items():
        groups: dict[str, list[PredictionRow]] = defaultdict(list)
        for row in rows:
            groups[row.answer_type or "untyped"].append(row)
        by_type[variant] = {}
        for kind, group in sorted(groups.items()):
            scores = score_records(group, target_format)
            by_type[variant][kind] = TypeScores(n=scores.n, contextual_em_pct=scores.contextual_em_pct,
                                                parametric_em_pct=scores.parametric_em_pct)
    return variants, by_type
