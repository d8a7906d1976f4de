"""What this run can resolve: the primary endpoint (params `report.primary_endpoint`), each
method minus its model family's full fine-tuning, paired by seed and question, as one declared
family under Holm; per comparison the smallest difference this run detects at 80 % power from
its own seed variance (noncentral t with S − 1 degrees of freedom at the first Holm step's level
α/m), the seeds a 10- and a 5-point difference would need at that spread, and a verdict.
Everything else in the report is descriptive. Pure: computed from the report's aggregates."""
from __future__ import annotations

import math
from dataclasses import dataclass

from cfqa.analysis import statistics
from cfqa.config import PrimaryEndpoint
from cfqa.report import formatting as fmt
from cfqa.report.aggregate import ALPHA, CONFIDENCE, Aggregates, metric_title
from cfqa.report.tables import Table, method_cells, method_headers

POWER = statistics.DEFAULT_POWER
TARGET_DIFFERENCES = (10.0, 5.0)      # what a run "should" resolve: the seed counts they need

RESOLVED_BELOW = "smaller than detectable"
NOT_RESOLVED = "not resolved"


@dataclass(frozen=True)
class EndpointComparison:
    method: str                                   # MethodResults key
    reference: str
    decision: statistics.Decision | None          # None when excluded
    excluded: str | None
    detectable: float                             # pp; NaN with one seed
    seeds_for: tuple[tuple[float, int | None], ...]  # (difference, seeds needed at this spread)

    @property
    def verdict(self) -> str:
        """higher / lower where Holm calls the difference; "smaller than detectable" where the
        interval lies inside ± the detectable difference (the run rules out what it could
        have seen); "not resolved" where the interval spans 0 and reaches the detectable
        difference, or where nothing is detectable (a detectable difference at or beyond the
        largest possible one, 100 points)."""
        if self.decision is None:
            return self.excluded or fmt.MISSING
        d = self.decision.difference
        if self.decision.significant:
            return "higher" if d.difference > 0 else "lower"
        if math.isnan(d.low) or not self.detectable < d.bounds[1]:
            return NOT_RESOLVED
        return RESOLVED_BELOW if -self.detectable < d.low and d.high < self.detectable else NOT_RESOLVED


@dataclass(frozen=True)
class Resolution:
    endpoint: PrimaryEndpoint
    comparisons: tuple[EndpointComparison, ...]
    family_size: int
    alpha: float
    power: float

    @property
    def detectable(self) -> list[float]:
        return [c.detectable for c in self.comparisons if not math.isnan(c.detectable)]


def endpoint_title(endpoint: PrimaryEndpoint) -> str:
    return f"{metric_title(endpoint.metric)} on {endpoint.variant} `{endpoint.set}` contexts"


def resolve(agg: Aggregates, endpoint: PrimaryEndpoint, *, alpha: float = ALPHA, power: float = POWER) -> Resolution:
    """Every compared method on the primary endpoint, decided by Holm over them."""
    candidates = []
    for method in agg.methods:
        reference = agg.reference_of(method)
        if reference is None:
            continue
        a, b = (agg.outcomes(m, endpoint.set, endpoint.variant) for m in (method, reference))
        arrays = [None if o is None else o.of(endpoint.metric) for o in (a, b)]
        if not agg.convergence[method].converged:
            candidates.append((method, reference, None, "not converged: not compared"))
        elif any(x is None or x.shape[1] == 0 for x in arrays):
            candidates.append((method, reference, None, "no scores"))
        else:
            candidates.append((method, reference,
                               statistics.paired_difference(*arrays, confidence=CONFIDENCE), None))
    decisions = iter(statistics.decide([d for _, _, d, _ in candidates if d is not None], alpha=alpha))
    decided = [(m, r, next(decisions) if d is not None else None, why) for m, r, d, why in candidates]
    size = next((d.family_size for _, _, d, _ in decided if d is not None), 0)
    comparisons = []
    for method, reference, decision, why in decided:
        detectable, seeds_for = math.nan, tuple((t, None) for t in TARGET_DIFFERENCES)
        if decision is not None and decision.difference.df >= 1:
            d = decision.difference
            tests = max(size, 1)
            detectable = statistics.minimum_detectable_difference(d.standard_error, d.df, alpha=alpha, power=power,
                                                                  tests=tests)
            seed_sd = d.seed_se * math.sqrt(d.n_seeds)
            seeds_for = tuple((t, statistics.seeds_needed(t, seed_sd=seed_sd, question_se=d.question_se, alpha=alpha,
                                                          power=power, tests=tests) if seed_sd > 0 else 2)
                              for t in TARGET_DIFFERENCES)
        comparisons.append(EndpointComparison(method=method, reference=reference, decision=decision, excluded=why,
                                              detectable=detectable, seeds_for=seeds_for))
    return Resolution(endpoint=endpoint, comparisons=tuple(comparisons), family_size=size, alpha=alpha, power=power)


def _seeds_text(value: int | None) -> str:
    return "more than 1,000" if value is None else fmt.count(value)


def resolution_table(results, resolution: Resolution) -> Table:
    by_key = {r.key: r for r in results}
    rows = []
    for c in resolution.comparisons:
        d = c.decision.difference if c.decision is not None else None
        rows.append((*method_cells(by_key[c.method]), f"`{by_key[c.reference].name}`",
                     fmt.count(d.n_seeds) if d else fmt.MISSING,
                     fmt.signed_interval(d.difference, d.low, d.high) if d else fmt.MISSING,
                     fmt.percent(100 * d.confidence, 2) if d and not math.isnan(d.low) else fmt.MISSING,
                     fmt.p_value(c.decision.holm_p) if c.decision else fmt.MISSING,
                     fmt.percent(c.detectable),
                     *(_seeds_text(n) if d and d.df >= 1 else fmt.MISSING for _, n in c.seeds_for),
                     c.verdict))
    targets = [f"seeds for {t:g} pp" for t in TARGET_DIFFERENCES]
    return Table(
        key="primary-endpoint",
        title=f"Primary endpoint: {endpoint_title(resolution.endpoint)}, each method minus full fine-tuning",
        headers=(*method_headers(results), "minus", "seeds", "Δ (pp)", "interval level (%)", "Holm p",
                 f"detectable at {100 * resolution.power:.0f} % power (pp)", *targets, "verdict"),
        rows=tuple(rows),
        caption=(
            f"One declared family: the {resolution.family_size} comparisons of this table, Holm at "
            f"{100 * resolution.alpha:g} %. Δ: mean paired difference (seed i with seed i, question j with "
            "question j) with its t interval on S − 1 degrees of freedom, whose standard error adds question "
            "sampling to the spread of the per-seed differences; each interval is at the level of its Holm step, "
            "so it excludes 0 exactly where the verdict is higher or lower. Detectable: the smallest true "
            f"difference this comparison detects with {100 * resolution.power:.0f} % probability at the first "
            "Holm step's level (noncentral t), from this run's own seed spread, itself estimated from "
            "few seeds. Seeds for: how many seeds per method that spread would need. Verdict: higher or "
            f"lower (Holm); \"{RESOLVED_BELOW}\" where the interval lies inside ± the detectable difference; "
            f"\"{NOT_RESOLVED}\" where it spans 0 and reaches the detectable difference: a difference of that "
            "size may exist and this run cannot tell."),
    )


def resolution_paragraphs(resolution: Resolution, n_seeds: int) -> tuple[str, ...]:
    """Sentences with this run's numbers: what it detects, and what is descriptive."""
    title = endpoint_title(resolution.endpoint)
    why = ("It asks the study's question — does a fine-tuned model read a context that contradicts the answer "
           "it would give from memory — on questions it never saw in training.")
    if not resolution.comparisons:
        return (f"Primary endpoint (params `report.primary_endpoint`): {title}. {why} No method is compared "
                "with full fine-tuning in this run, so nothing is resolved.",)
    detectable = sorted(resolution.detectable)
    if not detectable:
        reach = (f"With {n_seeds} seed{'s' if n_seeds != 1 else ''} there is no seed-level interval, so this run "
                 "resolves no difference.")
    else:
        median = detectable[len(detectable) // 2] if len(detectable) % 2 else \
            (detectable[len(detectable) // 2 - 1] + detectable[len(detectable) // 2]) / 2
        spread = "" if len(detectable) == 1 else f" (median over methods; {fmt.percent(detectable[0])} to " \
                                                  f"{fmt.percent(detectable[-1])} pp by method)"
        reach = (f"With {n_seeds} seeds per method, this run detects a difference from full fine-tuning of "
                 f"{fmt.percent(median)} pp{spread} with {100 * resolution.power:.0f} % power after Holm over "
                 f"the {resolution.family_size} comparisons.")
    counts = {verdict: sum(c.verdict == verdict for c in resolution.comparisons)
              for verdict in ("higher", "lower", RESOLVED_BELOW, NOT_RESOLVED)}
    outcome = (f"Higher than full fine-tuning: {counts['higher']}; lower: {counts['lower']}; smaller than what "
               f"the run detects: {counts[RESOLVED_BELOW]}; not resolved: {counts[NOT_RESOLVED]}.")
    return (f"Primary endpoint (params `report.primary_endpoint`): {title}, each method minus its model family's "
            f"full fine-tuning. {why}", f"{reach} {outcome}",
            "Everything else in this report is descriptive: means with 95 % intervals over seeds for "
            "orientation, and differences marked only within each table's own declared family (Holm over that "
            "table), never a claim beyond this endpoint.")
