"""Every number the report compares, computed once with cfqa.analysis.statistics from the aligned
seeds × questions arrays: accuracy intervals per cell, paired differences against full
fine-tuning, memorization ratios (pooled, and on the questions the model knew) and seen − test,
and which methods did not converge. Pure: the same results give the same numbers, bit for bit.

Multiplicity: each table declares one family of comparisons and Holm runs over it
(`statistics.decide`): the comparisons with full fine-tuning on one question set (every method,
variant and metric of that table), the answer-type comparisons on one set, and the seen − test
differences of the memorization table. `Comparison.significant` is `Decision.significant`, the
one rule.

Results of several model families (T5, GPT-Neo) are aggregated family by family: each
family's runs are aligned on their own questions, and each family's methods are compared with
that family's full fine-tuning; the numbers are keyed by `MethodResults.key`, unique across
families. A table's Holm family spans every model family it shows."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cfqa.analysis import statistics
from cfqa.scoring import metrics
from cfqa.formats import VARIANTS
from cfqa.report.arrays import QuestionArrays, question_arrays
from cfqa.report.inputs import MethodResults

CONFIDENCE = statistics.DEFAULT_CONFIDENCE      # descriptive intervals (means, ratios)
ALPHA = statistics.DEFAULT_ALPHA                # Holm's family-wise level for every declared family
# A method whose mean share of well-formed generations on factual `test` contexts is below this
# has not learned the output format: most of its "wrong answers" are unparseable text, so its
# accuracy measures the format, not context use, and a comparison with full fine-tuning would
# rank a failed training run. Half the answers is the point where format failures dominate.
CONVERGED_WELL_FORMED_PCT = 50.0
CONVERGENCE_SET, CONVERGENCE_VARIANT = "test", "factual"
TYPE_VARIANTS = ("factual", "counterfactual")    # variants with per-answer-type intervals
TYPE_COMPARISON_VARIANT = "factual"


def compared_metrics() -> tuple[str, ...]:
    """The metrics with intervals and paired comparisons: the registry's `compared` ones
    (cfqa.scoring.metrics), read at call time."""
    return tuple(m.name for m in metrics.compared_metrics())


def metric_title(name: str) -> str:
    return metrics.metric(name).label


@dataclass(frozen=True)
class Convergence:
    well_formed_pct: tuple[float | None, ...]   # per seed, test factual
    mean_pct: float | None
    converged: bool


@dataclass(frozen=True)
class Comparison:
    """One method minus the reference on one member of a table; `decision` None when excluded
    (then `excluded` says why). The difference carries its interval at the level of its Holm
    decision (see statistics.decide)."""

    method: str
    set: str
    variant: str
    metric: str
    answer_type: str | None
    decision: statistics.Decision | None
    excluded: str | None = None                # why no difference was computed

    @property
    def difference(self) -> statistics.Difference | None:
        return None if self.decision is None else self.decision.difference

    @property
    def holm_p(self) -> float | None:
        return None if self.decision is None or math.isnan(self.decision.holm_p) else self.decision.holm_p

    @property
    def significant(self) -> bool:
        return self.decision is not None and self.decision.significant


@dataclass(frozen=True)
class MemorizationCell:
    interval: statistics.Interval
    original: int          # pooled over seeds and questions
    substitute: int
    other: int
    # The same ratio on the cells whose factual version the same run answered correctly
    # (Longpre et al.'s: a knowledge conflict needs knowledge); None without factual rows.
    known: statistics.Interval | None = None
    known_cells: int = 0

    @property
    def cells(self) -> int:
        return self.original + self.substitute + self.other


@dataclass(frozen=True)
class Aggregates:
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    sets: tuple[str, ...]
    variants: dict[str, tuple[str, ...]]                          # set -> variants present
    answer_types: dict[str, tuple[str, ...]]                      # set -> types (factual rows)
    accuracy: dict[tuple[str, str, str, str], statistics.Interval]  # (method, set, variant, metric)
    by_type: dict[tuple[str, str, str, str, str], statistics.Interval]  # (method, set, variant, type, metric)
    memorization: dict[tuple[str, str], MemorizationCell]         # (method, set)
    seen_minus_test: dict[str, statistics.Decision]               # method (Holm over the table's methods)
    convergence: dict[str, Convergence]
    reference: str | None                                         # the full fine-tuning method (first family's)
    comparisons: tuple[Comparison, ...] = ()
    type_comparisons: tuple[Comparison, ...] = ()
    arrays: tuple[QuestionArrays, ...] = field(default=(), compare=False, repr=False)   # one per family
    references: dict[str, str] = field(default_factory=dict)      # method key -> its family's reference

    def reference_of(self, method: str) -> str | None:
        """The full fine-tuning run `method` is compared with: its own family's."""
        return self.references.get(method)

    def outcomes(self, method: str, set_name: str, variant: str):
        """The seeds × questions outcomes of one method on one (set, variant), or None."""
        return next((a.outcomes[(method, set_name, variant)] for a in self.arrays
                     if (method, set_name, variant) in a.outcomes), None)

    def comparison(self, method: str, set_name: str, variant: str, metric: str,
                   answer_type: str | None = None) -> Comparison | None:
        pool = self.type_comparisons if answer_type else self.comparisons
        return next((c for c in pool if (c.method, c.set, c.variant, c.metric, c.answer_type)
                     == (method, set_name, variant, metric, answer_type)), None)


def convergence(result: MethodResults) -> Convergence:
    values = []
    for run in result.runs:
        cell = run.metrics.sets.get(CONVERGENCE_SET, {}).get(CONVERGENCE_VARIANT)
        values.append(None if cell is None else cell.get("well_formed_pct"))
    present = [v for v in values if v is not None]
    mean = float(np.mean(present)) if present else None
    # Without a measured share there is nothing to hold against a method.
    return Convergence(well_formed_pct=tuple(values), mean_pct=mean,
                       converged=mean is None or mean >= CONVERGED_WELL_FORMED_PCT)


def reference_method(results: Sequence[MethodResults]) -> str | None:
    """The first method whose registry method is full fine-tuning (its key)."""
    return next((r.key for r in results if r.registry_method == "full"), None)


def family_groups(results: Sequence[MethodResults]) -> list[list[MethodResults]]:
    """The results split by model family, families and methods in the order given."""
    groups: dict[str | None, list[MethodResults]] = {}
    for r in results:
        groups.setdefault(r.family, []).append(r)
    return list(groups.values())


def _ordered_variants(present: set[str]) -> tuple[str, ...]:
    return tuple(v for v in VARIANTS if v in present) + tuple(sorted(present - set(VARIANTS)))


def _interval(scores: np.ndarray) -> statistics.Interval:
    return statistics.mean_interval(scores, confidence=CONFIDENCE)


def _metric_array(outcomes, metric: str) -> np.ndarray | None:
    array = outcomes.of(metric)
    return None if array is None or array.shape[1] == 0 else array


def _candidates(pairs: list[tuple[str, np.ndarray | None, np.ndarray | None]], reference: str,
                convergence_of: dict[str, Convergence], set_name: str, variant: str, metric: str,
                answer_type: str | None) -> list[tuple[Comparison, statistics.Difference | None]]:
    """Every method against the reference on one (set, variant, metric[, type]), undecided:
    the Holm decision is taken over the whole table (`_decide`)."""
    out = []
    for method, a, b in pairs:
        if method == reference:
            continue
        excluded, difference = None, None
        if not convergence_of[method].converged:
            excluded = "not converged: not compared"
        elif a is None or b is None:
            excluded = "no scores"
        else:
            difference = statistics.paired_difference(a, b, confidence=CONFIDENCE)
        out.append((Comparison(method=method, set=set_name, variant=variant, metric=metric, answer_type=answer_type,
                               decision=None, excluded=excluded), difference))
    return out


def _decide(candidates: Sequence[tuple[Comparison, statistics.Difference | None]]) -> list[Comparison]:
    """Holm over one table's comparisons: the declared family."""
    decisions = iter(statistics.decide([d for _, d in candidates if d is not None], alpha=ALPHA))
    return [dataclasses.replace(c, decision=next(decisions)) if d is not None else c for c, d in candidates]


def _memorization_cell(classes) -> MemorizationCell:
    interval = statistics.ratio_interval(classes.is_original, classes.is_substitute, confidence=CONFIDENCE)
    original, substitute = int(classes.is_original.sum()), int(classes.is_substitute.sum())
    known = classes.known()
    return MemorizationCell(
        interval=interval, original=original, substitute=substitute,
        other=int(classes.is_original.size) - original - substitute,
        known=None if known is None else statistics.ratio_interval(known.is_original, known.is_substitute,
                                                                   confidence=CONFIDENCE),
        known_cells=0 if known is None else int(known.factual_correct.sum()))


@dataclass(frozen=True)
class _Undecided:
    """One model family's aggregates with its comparisons not yet decided: Holm runs over a
    whole table, which may hold several model families."""

    aggregates: Aggregates
    comparisons: list[tuple[Comparison, statistics.Difference | None]]
    type_comparisons: list[tuple[Comparison, statistics.Difference | None]]
    seen_minus_test: dict[str, statistics.Difference]


def _aggregate_family(results: Sequence[MethodResults]) -> _Undecided:
    """The aggregates of one model family's methods."""
    arrays = question_arrays(results)
    methods = tuple(r.key for r in results)
    sets_present = {s for s, _ in arrays.ids}
    sets = tuple(s for s in ("test", "seen") if s in sets_present) + tuple(sorted(sets_present - {"test", "seen"}))
    variants = {s: _ordered_variants({v for t, v in arrays.ids if t == s}) for s in sets}
    answer_types = {s: tuple(arrays.types_in(s, TYPE_COMPARISON_VARIANT)) for s in sets}
    convergence_of = {r.key: convergence(r) for r in results}
    reference = reference_method(results)

    accuracy, by_type = {}, {}
    for method in methods:
        for s in sets:
            for v in variants[s]:
                outcomes = arrays.outcomes[(method, s, v)]
                for metric in compared_metrics():
                    array = _metric_array(outcomes, metric)
                    if array is not None:
                        accuracy[(method, s, v, metric)] = _interval(array)
                if v not in TYPE_VARIANTS:
                    continue
                for t in arrays.types_in(s, v):
                    typed = arrays.of_type(method, s, v, t)
                    for metric in compared_metrics():
                        array = _metric_array(typed, metric)
                        if array is not None:
                            by_type[(method, s, v, t, metric)] = _interval(array)

    memorization = {key: _memorization_cell(classes) for key, classes in arrays.memorization.items()
                    if classes.is_original.shape[1] > 0}
    seen_minus_test = {}
    for method in methods:
        seen, test = arrays.memorization.get((method, "seen")), arrays.memorization.get((method, "test"))
        if seen is not None and test is not None and seen.is_original.shape[1] and test.is_original.shape[1]:
            seen_minus_test[method] = statistics.unpaired_ratio_difference(
                seen.is_original, seen.is_substitute, test.is_original, test.is_substitute, confidence=CONFIDENCE)

    comparisons: list[tuple[Comparison, statistics.Difference | None]] = []
    type_comparisons: list[tuple[Comparison, statistics.Difference | None]] = []
    if reference is not None:
        for s in sets:
            for v in variants[s]:
                for metric in compared_metrics():
                    base = _metric_array(arrays.outcomes[(reference, s, v)], metric)
                    pairs = [(m, _metric_array(arrays.outcomes[(m, s, v)], metric), base) for m in methods]
                    comparisons += _candidates(pairs, reference, convergence_of, s, v, metric, None)
            if TYPE_COMPARISON_VARIANT in variants[s]:
                for t in answer_types[s]:
                    base = _metric_array(arrays.of_type(reference, s, TYPE_COMPARISON_VARIANT, t), "contextual_em")
                    pairs = [(m, _metric_array(arrays.of_type(m, s, TYPE_COMPARISON_VARIANT, t), "contextual_em"), base)
                             for m in methods]
                    type_comparisons += _candidates(pairs, reference, convergence_of, s, TYPE_COMPARISON_VARIANT,
                                                    "contextual_em", t)
    return _Undecided(
        aggregates=Aggregates(methods=methods, seeds=results[0].seeds if results else (), sets=sets,
                              variants=variants, answer_types=answer_types, accuracy=accuracy, by_type=by_type,
                              memorization=memorization, seen_minus_test={}, convergence=convergence_of,
                              reference=reference, arrays=(arrays,),
                              references={m: reference for m in methods if reference is not None and m != reference}),
        comparisons=comparisons, type_comparisons=type_comparisons, seen_minus_test=seen_minus_test)


def _union(groups: Sequence[Sequence[str]], preferred: Sequence[str] = ()) -> tuple[str, ...]:
    present = {item for group in groups for item in group}
    return tuple(p for p in preferred if p in present) + tuple(sorted(present - set(preferred)))


def _by_set(candidates: Sequence[tuple[Comparison, statistics.Difference | None]]) -> tuple[Comparison, ...]:
    """Decided per table: one table per question set."""
    sets = list(dict.fromkeys(c.set for c, _ in candidates))
    decided = {s: iter(_decide([(c, d) for c, d in candidates if c.set == s])) for s in sets}
    return tuple(next(decided[c.set]) for c, _ in candidates)


def aggregate(results: Sequence[MethodResults]) -> Aggregates:
    """Every family aggregated on its own (`_aggregate_family`), merged: keys are unique across
    families, and sets, variants and answer types are the union of the families'. Holm then runs
    over each table: the comparisons of one set, the type comparisons of one set, and the
    seen − test differences."""
    if not results:
        raise ValueError("expected at least one method's results")
    undecided = [_aggregate_family(group) for group in family_groups(results)]
    parts = [u.aggregates for u in undecided]
    seen_minus_test = {m: d for u in undecided for m, d in u.seen_minus_test.items()}
    decided = dict(zip(seen_minus_test, statistics.decide(list(seen_minus_test.values()), alpha=ALPHA)))
    comparisons = _by_set([c for u in undecided for c in u.comparisons])
    type_comparisons = _by_set([c for u in undecided for c in u.type_comparisons])
    if len(parts) == 1:
        return dataclasses.replace(parts[0], comparisons=comparisons, type_comparisons=type_comparisons,
                                   seen_minus_test=decided)
    sets = _union([p.sets for p in parts], ("test", "seen"))
    merged: dict[str, dict] = {name: {} for name in ("accuracy", "by_type", "memorization", "convergence",
                                                    "references")}
    for part in parts:
        for name, values in merged.items():
            values.update(getattr(part, name))
    return Aggregates(
        methods=tuple(m for p in parts for m in p.methods), seeds=parts[0].seeds, sets=sets,
        variants={s: _union([p.variants.get(s, ()) for p in parts], VARIANTS) for s in sets},
        answer_types={s: _union([p.answer_types.get(s, ()) for p in parts]) for s in sets},
        reference=next((p.reference for p in parts if p.reference is not None), None),
        comparisons=comparisons, type_comparisons=type_comparisons, seen_minus_test=decided,
        arrays=tuple(a for p in parts for a in p.arrays), **merged)
