"""The report's verdicts on the primary endpoint and its generated text, on synthetic
differences (fast): higher or lower only where Holm calls it, "smaller than detectable" only
where the interval lies inside ± the detectable difference and something is detectable at all,
"not resolved" otherwise; the answerability text is computed, never typed."""
from __future__ import annotations

import math

import numpy as np

from cfqa.analysis import statistics
from cfqa.config import PrimaryEndpoint
from cfqa.report.document import mixture_cost
from cfqa.report.resolution import (NOT_RESOLVED, RESOLVED_BELOW, EndpointComparison, Resolution,
                                    resolution_paragraphs)


def _comparison(a: np.ndarray, b: np.ndarray, family: int = 1) -> EndpointComparison:
    difference = statistics.paired_difference(a, b)
    decision = statistics.decide([difference] * family)[0]
    detectable = statistics.minimum_detectable_difference(difference.standard_error, difference.df, tests=family)
    return EndpointComparison(method="m", reference="full", decision=decision, excluded=None, detectable=detectable,
                              seeds_for=())


def _scores(rng, seeds: int, accuracy: float, seed_sd: float, questions: int = 200) -> np.ndarray:
    per_seed = np.clip(rng.normal(accuracy, seed_sd, (seeds, 1)), 0, 1)
    return (rng.random((seeds, questions)) < per_seed).astype(float)


def test_a_clear_difference_is_higher_or_lower():
    rng = np.random.default_rng(1)
    full = _scores(rng, 8, 0.5, 0.02)
    assert _comparison(_scores(rng, 8, 0.8, 0.02), full).verdict == "higher"
    assert _comparison(_scores(rng, 8, 0.2, 0.02), full).verdict == "lower"


def test_a_tight_null_is_smaller_than_detectable_and_a_wide_one_is_not_resolved():
    rng = np.random.default_rng(2)
    tight = _comparison(_scores(rng, 10, 0.6, 0.01, 2000), _scores(rng, 10, 0.6, 0.01, 2000))
    assert not tight.decision.significant and tight.detectable < 10
    assert tight.verdict == RESOLVED_BELOW
    wide = _comparison(_scores(rng, 3, 0.6, 0.15), _scores(rng, 3, 0.55, 0.15), family=8)
    assert not wide.decision.significant
    assert wide.verdict == NOT_RESOLVED


def test_nothing_detectable_is_not_resolved_even_inside_the_bounds():
    # Two seeds, eight comparisons: the detectable difference is beyond 100 points, so an
    # interval clipped to ±100 lies "inside" it without ruling anything out.
    rng = np.random.default_rng(3)
    comparison = _comparison(_scores(rng, 2, 0.6, 0.1), _scores(rng, 2, 0.5, 0.1), family=8)
    assert comparison.detectable > 100
    assert comparison.verdict == NOT_RESOLVED


def test_excluded_and_one_seed_comparisons():
    excluded = EndpointComparison(method="m", reference="full", decision=None, excluded="not converged: not compared",
                                  detectable=math.nan, seeds_for=())
    assert excluded.verdict == "not converged: not compared"
    one = statistics.decide([statistics.paired_difference([[1, 0, 1]], [[0, 0, 1]])])[0]
    assert EndpointComparison(method="m", reference="full", decision=one, excluded=None, detectable=math.nan,
                              seeds_for=()).verdict == NOT_RESOLVED


def test_resolution_text_states_the_median_detectable_difference():
    rng = np.random.default_rng(4)
    full = _scores(rng, 5, 0.6, 0.05)
    comparisons = tuple(_comparison(_scores(rng, 5, 0.6, sd), full, family=3) for sd in (0.02, 0.05, 0.08))
    resolution = Resolution(endpoint=PrimaryEndpoint(), comparisons=comparisons, family_size=3, alpha=0.05, power=0.8)
    text = " ".join(resolution_paragraphs(resolution, 5))
    median = sorted(c.detectable for c in comparisons)[1]
    assert f"of {median:.1f} pp (median over methods" in text
    assert "contextual EM on counterfactual `test` contexts" in text
    assert "Everything else in this report is descriptive" in text
    one_seed = Resolution(endpoint=PrimaryEndpoint(), comparisons=(
        EndpointComparison(method="m", reference="full", decision=None, excluded="no scores", detectable=math.nan,
                           seeds_for=()),), family_size=0, alpha=0.05, power=0.8)
    assert "resolves no difference" in " ".join(resolution_paragraphs(one_seed, 1))


def test_without_mixture_runs_the_answerability_cost_is_not_claimed():
    text = mixture_cost([])
    assert "workflow/profiles/mixtures/" in text and "this run has no pair" in text
    assert not any(ch.isdigit() for ch in text.replace("f+cf+a", "").replace("f+cf", "").replace("f+a", ""))
