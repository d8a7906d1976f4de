"""Scores for one method: every metric of the registry (cfqa.scoring.metrics) per question, and from
those per question set and variant and per answer type; memorization on counterfactual
contexts, and the most-frequent-answer baseline. Pure functions over rows; results are the
records of cfqa.contract, every share in percent (`_pct`)."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

from cfqa.scoring import metrics
from cfqa.scoring.answer_metrics import exact_match, memorization_class, memorization_ratio, normalize_answer
from cfqa.contract import Memorization, PredictionRow, QuestionScores, TypeScores, VariantScores
from cfqa.formats import parse_generation


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


def _as_float(value: float | None) -> float | None:
    # One JSON spelling per value: rouge-score gives an int 0 for an empty answer.
    return None if value is None else float(value)


def question_scores(records: list[PredictionRow], target_format: str) -> list[QuestionScores]:
    """Every metric of the registry (cfqa.scoring.metrics) on every question, and the memorization
    class of each counterfactual answer with a substitute: the one place predictions are
    scored."""
    registered = metrics.registered()
    return [QuestionScores(id=r.id, set=r.set, variant=r.variant, answer_type=r.answer_type,
                           scores={m.name: _as_float(m.score(r, target_format)) for m in registered},
                           memorization=(memorization_class(r.contextual, r.gold_parametric, r.substitute)
                                         if r.variant == "counterfactual" and r.substitute else None))
            for r in records]


def group_scores(questions: list[QuestionScores]) -> VariantScores:
    """One group's scores: `n`, then every metric's field, the group value of its questions."""
    scores: VariantScores = {"n": len(questions)}
    for metric in metrics.registered():
        scores[metric.field] = metric.group_value([q.scores[metric.name] for q in questions])
    return scores


def score_records(records: list[PredictionRow], target_format: str) -> VariantScores:
    return group_scores(question_scores(records, target_format))


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


def scores_by_variant(questions: list[QuestionScores]) -> tuple[dict[str, VariantScores],
                                                                   dict[str, dict[str, TypeScores]]]:
    """(per-variant scores, per-variant-and-type scores of the compared metrics) for one
    question set."""
    by_variant: dict[str, list[QuestionScores]] = defaultdict(list)
    for question in questions:
        by_variant[question.variant].append(question)
    variants = {variant: group_scores(rows) for variant, rows in by_variant.items()}
    compared = metrics.compared_metrics()
    by_type = {}
    for variant, rows in by_variant.items():
        groups: dict[str, list[QuestionScores]] = defaultdict(list)
        for row in rows:
            groups[row.answer_type or "untyped"].append(row)
        by_type[variant] = {}
        for kind, group in sorted(groups.items()):
            by_type[variant][kind] = {"n": len(group), **{m.field: m.group_value([q.scores[m.name] for q in group])
                                                          for m in compared}}
    return variants, by_type


def score_set(records: list[PredictionRow], target_format: str) -> tuple[dict[str, VariantScores],
                                                                          dict[str, dict[str, TypeScores]]]:
    """(per-variant scores, per-variant-and-type scores) for one question set."""
    return scores_by_variant(question_scores(records, target_format))
