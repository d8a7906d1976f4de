"""Every number the report compares, computed once with cfqa.statistics from the aligned
seeds × questions arrays: accuracy intervals per cell, paired differences against full
fine-tuning (Holm-adjusted within each family of comparisons), memorization ratios and
seen − test, and which methods did not converge. Pure: the same results give the same numbers,
bit for bit.

Results of several model families (T5, GPT-Neo) are aggregated family by family: each family's
runs are aligned on their own questions, and each family's methods are compared with that
family's full fine-tuning; the numbers are keyed by `MethodResults.key`, unique across
families."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cfqa import statistics
from cfqa.formats import VARIANTS
from cfqa.report.arrays import QuestionArrays, question_arrays
from cfqa.report.inputs import MethodResults

# One fixed random seed for every bootstrap and permutation: the report is byte-identical on a
# rerun, and every cell is resampled with the same draws (common random numbers).
REPORT_SEED = 0
CONFIDENCE = 0.95
# A method whose mean share of well-formed generations on factual `test` contexts is below this
# has not learned the output format: most of its "wrong answers" are unparseable text, so its
# accuracy measures the format, not context use, and a comparison with full fine-tuning would
# rank a failed training run. Half the answers is the point where format failures dominate.
CONVERGED_WELL_FORMED_PCT = 50.0
CONVERGENCE_SET, CONVERGENCE_VARIANT = "test", "factual"

METRICS = ("contextual_em", "parametric_em")
METRIC_TITLES = {"contextual_em": "contextual EM", "parametric_em": "parametric EM"}
TYPE_VARIANTS = ("factual", "counterfactual")    # variants with per-answer-type intervals
TYPE_COMPARISON_VARIANT = "factual"


@dataclass(frozen=True)
class Convergence:
    well_formed_pct: tuple[float | None, ...]   # per seed, test factual
    mean_pct: float | None
    converged: bool


def significant(difference: statistics.Difference | None, holm_p: float | None) -> bool:
    """The report's one rule for calling a paired difference a difference: a Holm-adjusted p
    below 1 − confidence and an interval that excludes 0."""
    return bool(difference is not None and holm_p is not None and holm_p < 1 - difference.confidence
                and not math.isnan(difference.low) and (difference.low > 0 or difference.high < 0))


@dataclass(frozen=True)
class Comparison:
    """One method minus the reference on one family member; `difference` None when excluded."""

    method: str
    set: str
    variant: str
    metric: str
    answer_type: str | None
    difference: statistics.Difference | None
    holm_p: float | None
    excluded: str | None = None                # why no difference was computed

    @property
    def significant(self) -> bool:
        return significant(self.difference, self.holm_p)


@dataclass(frozen=True)
class MemorizationCell:
    interval: statistics.Interval
    original: int          # pooled over seeds and questions
    substitute: int
    other: int

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
    seen_minus_test: dict[str, statistics.Difference]             # method
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
        values.append(None if cell is None else cell.well_formed_pct)
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
    return statistics.mean_interval(scores, confidence=CONFIDENCE, seed=REPORT_SEED)


def _metric_array(outcomes, metric: str) -> np.ndarray | None:
    array = outcomes.contextual if metric == "contextual_em" else outcomes.parametric
    return None if array is None or array.shape[1] == 0 else array


def _family(pairs: list[tuple[str, np.ndarray | None, np.ndarray | None]], reference: str,
            convergence_of: dict[str, Convergence], set_name: str, variant: str, metric: str,
            answer_type: str | None) -> list[Comparison]:
    """Every method against the reference on one (set, variant, metric[, type]); Holm over
    the methods that were compared."""
    out: list[tuple[str, statistics.Difference | None, str | None]] = []
    for method, a, b in pairs:
        if method == reference:
            continue
        if not convergence_of[method].converged:
            out.append((method, None, "not converged: not compared"))
        elif a is None or b is None:
            out.append((method, None, "no scores"))
        else:
            out.append((method, statistics.paired_difference(a, b, confidence=CONFIDENCE, seed=REPORT_SEED), None))
    tested = [d.p_value for _, d, _ in out if d is not None and not math.isnan(d.p_value)]
    adjusted = iter(statistics.holm_adjust(tested).tolist())
    comparisons = []
    for method, d, reason in out:
        holm = next(adjusted) if d is not None and not math.isnan(d.p_value) else None
        comparisons.append(Comparison(method=method, set=set_name, variant=variant, metric=metric,
                                      answer_type=answer_type, difference=d, holm_p=holm, excluded=reason))
    return comparisons


def _memorization_cell(classes) -> MemorizationCell:
    interval = statistics.ratio_interval(classes.is_original, classes.is_substitute, confidence=CONFIDENCE,
                                         seed=REPORT_SEED)
    original, substitute = int(classes.is_original.sum()), int(classes.is_substitute.sum())
    return MemorizationCell(interval=interval, original=original, substitute=substitute,
                            other=int(classes.is_original.size) - original - substitute)


def _aggregate_family(results: Sequence[MethodResults]) -> Aggregates:
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
                for metric in METRICS:
                    array = _metric_array(outcomes, metric)
                    if array is not None:
                        accuracy[(method, s, v, metric)] = _interval(array)
                if v not in TYPE_VARIANTS:
                    continue
                for t in arrays.types_in(s, v):
                    typed = arrays.of_type(method, s, v, t)
                    for metric in METRICS:
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
                seen.is_original, seen.is_substitute, test.is_original, test.is_substitute,
                confidence=CONFIDENCE, seed=REPORT_SEED)

    comparisons: list[Comparison] = []
    type_comparisons: list[Comparison] = []
    if reference is not None:
        for s in sets:
            for v in variants[s]:
                for metric in METRICS:
                    base = _metric_array(arrays.outcomes[(reference, s, v)], metric)
                    pairs = [(m, _metric_array(arrays.outcomes[(m, s, v)], metric), base) for m in methods]
                    comparisons += _family(pairs, reference, convergence_of, s, v, metric, None)
            if TYPE_COMPARISON_VARIANT in variants[s]:
                for t in answer_types[s]:
                    base = _metric_array(arrays.of_type(reference, s, TYPE_COMPARISON_VARIANT, t), "contextual_em")
                    pairs = [(m, _metric_array(arrays.of_type(m, s, TYPE_COMPARISON_VARIANT, t), "contextual_em"), base)
                             for m in methods]
                    type_comparisons += _family(pairs, reference, convergence_of, s, TYPE_COMPARISON_VARIANT,
                                                "contextual_em", t)
    return Aggregates(methods=methods, seeds=results[0].seeds if results else (), sets=sets, variants=variants,
                      answer_types=answer_types, accuracy=accuracy, by_type=by_type, memorization=memorization,
                      seen_minus_test=seen_minus_test, convergence=convergence_of, reference=reference,
                      comparisons=tuple(comparisons), type_comparisons=tuple(type_comparisons), arrays=(arrays,),
                      references={m: reference for m in methods if reference is not None and m != reference})


def _union(groups: Sequence[Sequence[str]], preferred: Sequence[str] = ()) -> tuple[str, ...]:
    present = {item for group in groups for item in group}
    return tuple(p for p in preferred if p in present) + tuple(sorted(present - set(preferred)))


def aggregate(results: Sequence[MethodResults]) -> Aggregates:
    """Every family aggregated on its own (`_aggregate_family`), merged: keys are unique across
    families, and sets, variants and answer types are the union of the families'."""
    if not results:
        raise ValueError("expected at least one method's results")
    parts = [_aggregate_family(group) for group in family_groups(results)]
    if len(parts) == 1:
        return parts[0]
    sets = _union([p.sets for p in parts], ("test", "seen"))
    merged: dict[str, dict] = {name: {} for name in ("accuracy", "by_type", "memorization", "seen_minus_test",
                                                    "convergence", "references")}
    for part in parts:
        for name, values in merged.items():
            values.update(getattr(part, name))
    return Aggregates(
        methods=tuple(m for p in parts for m in p.methods), seeds=parts[0].seeds, sets=sets,
        variants={s: _union([p.variants.get(s, ()) for p in parts], VARIANTS) for s in sets},
        answer_types={s: _union([p.answer_types.get(s, ()) for p in parts]) for s in sets},
        reference=next((p.reference for p in parts if p.reference is not None), None),
        comparisons=tuple(c for p in parts for c in p.comparisons),
        type_comparisons=tuple(c for p in parts for c in p.type_comparisons),
        arrays=tuple(a for p in parts for a in p.arrays), **merged)
