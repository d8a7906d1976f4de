"""Seed-level statistics: hand-computed cases, agreement with scipy, Holm decisions that match
their intervals, the noncentral-t power against independent references, bad input. Coverage and
family-wise error rates on simulated experiments: test_statistics_coverage.py."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import expit

from cfqa.analysis.statistics import (
    Decision,
    Difference,
    Interval,
    decide,
    holm_adjust,
    mean_interval,
    minimum_detectable_difference,
    paired_difference,
    paired_ratio_difference,
    ratio_interval,
    seeds_needed,
    t_test_power,
    unpaired_ratio_difference,
)


def simulated_scores(rng: np.random.Generator, seeds: int, questions: int, *, mean_logit: float = 1.0,
                     seed_sd: float = 0.2, question_sd: float = 1.5,
                     question_effects: np.ndarray | None = None) -> np.ndarray:
    """0/1 correctness from a crossed logit model: seed effect + question difficulty + noise."""
    if question_effects is None:
        question_effects = rng.normal(0, question_sd, (1, questions))
    logits = mean_logit + rng.normal(0, seed_sd, (seeds, 1)) + question_effects
    return (rng.random((seeds, questions)) < expit(logits)).astype(float)


def crossed_standard_error(cells: np.ndarray) -> tuple[float, float]:
    """The seed and question parts of the standard error, written out from the two-way ANOVA
    with explicit residuals (the module uses the sums-of-squares identity instead)."""
    seeds, questions = cells.shape
    seed_means, question_means, grand = cells.mean(axis=1), cells.mean(axis=0), cells.mean()
    residual = cells - seed_means[:, None] - question_means[None, :] + grand
    ms_residual = (residual ** 2).sum() / ((seeds - 1) * (questions - 1))
    ms_questions = seeds * ((question_means - grand) ** 2).sum() / (questions - 1)
    seed_part = np.var(seed_means, ddof=1) / seeds
    question_part = max(0.0, (ms_questions - ms_residual) / (seeds * questions))
    return math.sqrt(seed_part), math.sqrt(question_part)


# --------------------------------------------------------------------------- mean_interval


def test_one_seed_has_an_estimate_and_no_seed_level_interval():
    result = mean_interval([[1, 0, 1, 1]])
    assert isinstance(result, Interval)
    assert result.estimate == 75.0 and result.per_seed == (75.0,)
    assert (result.n_seeds, result.n_questions, result.df) == (1, 4, 0)
    assert result.seed_variance_covered is False
    assert all(math.isnan(v) for v in (result.low, result.high, result.seed_sd, result.standard_error))
    assert mean_interval([[1, 0, 1, 1]], scale=1).estimate == 0.75


def test_mean_over_seeds_of_per_seed_means_and_seed_spread():
    result = mean_interval([[1, 1, 0], [0, 0, 0]])
    assert result.estimate == pytest.approx(100 / 3)
    assert result.per_seed == pytest.approx((200 / 3, 0.0))
    assert result.seed_variance_covered is True and result.df == 1
    assert result.seed_sd == pytest.approx(np.std([200 / 3, 0], ddof=1))


def test_constant_scores_give_a_zero_width_interval():
    result = mean_interval(np.full((3, 10), 0.6))
    assert result.estimate == pytest.approx(60.0)
    assert result.low == pytest.approx(60.0) and result.high == pytest.approx(60.0)
    assert result.seed_sd == pytest.approx(0.0)


def test_without_question_spread_it_is_scipys_t_interval_on_seed_means():
    # Every question of a seed scores the same: nothing varies between questions, the interval
    # is the one-sample t interval of the per-seed means with S − 1 degrees of freedom.
    per_seed = np.array([0.62, 0.71, 0.55, 0.68])
    result = mean_interval(np.repeat(per_seed[:, None], 50, axis=1))
    low, high = stats.t.interval(0.95, df=3, loc=100 * per_seed.mean(), scale=stats.sem(100 * per_seed))
    assert result.question_se == pytest.approx(0, abs=1e-9)
    assert (result.low, result.high) == (pytest.approx(low), pytest.approx(high))


def test_standard_error_adds_the_question_sampling_component():
    cells = simulated_scores(np.random.default_rng(3), 3, 120, seed_sd=0.4)
    result = mean_interval(cells, scale=1)
    seed_part, question_part = crossed_standard_error(cells)
    assert (result.seed_se, result.question_se) == (pytest.approx(seed_part), pytest.approx(question_part))
    assert question_part > 0.2 * seed_part                       # a real share, not a rounding error
    half = stats.t.ppf(0.975, 2) * math.hypot(seed_part, question_part)
    assert (result.low, result.high) == (pytest.approx(cells.mean() - half), pytest.approx(cells.mean() + half))


def test_crossed_variance_is_unbiased_for_the_variance_of_the_grand_mean():
    # A normal crossed model with known components: Var(grand mean) = σ²_s/S + σ²_q/Q + σ²_e/(SQ).
    rng = np.random.default_rng(4)
    seeds, questions, s_sd, q_sd, e_sd = 3, 40, 2.0, 3.0, 4.0
    cells = (rng.normal(0, s_sd, (3000, seeds, 1)) + rng.normal(0, q_sd, (3000, 1, questions))
             + rng.normal(0, e_sd, (3000, seeds, questions)))
    variances = [mean_interval(c, scale=1).standard_error ** 2 for c in cells]
    truth = s_sd ** 2 / seeds + q_sd ** 2 / questions + e_sd ** 2 / (seeds * questions)
    assert np.mean(variances) == pytest.approx(truth, rel=0.05)
    assert np.var(cells.mean(axis=(1, 2))) == pytest.approx(truth, rel=0.1)


def test_intervals_stay_inside_the_scale():
    result = mean_interval([[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1, 1]])
    assert 0.0 <= result.low and result.high == 100.0


@pytest.mark.parametrize("scores, message", [
    ([[1.0, math.nan, 0.0]], "finite"),
    ([[1.0, math.inf]], "finite"),
    (np.zeros((0, 5)), "at least one seed"),
    (np.zeros((3, 0)), "at least one seed"),
    ([1, 0, 1], "2-D seeds × questions"),
])
def test_bad_scores_are_rejected_with_a_clear_error(scores, message):
    with pytest.raises(ValueError, match=message):
        mean_interval(scores)


@pytest.mark.parametrize("confidence", [1.0, 0, -0.5])
def test_bad_confidence_is_rejected(confidence):
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([[1, 0]], confidence=confidence)


# --------------------------------------------------------------------------- paired_difference


def test_identical_methods_differ_by_zero_with_p_one():
    scores = simulated_scores(np.random.default_rng(6), 3, 80)
    result = paired_difference(scores, scores.copy())
    assert isinstance(result, Difference)
    assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_t_test_on_per_seed_differences_matches_scipy():
    # The difference is the same on every question of a seed: no question component, so the
    # test is scipy's paired t-test on the per-seed means.
    rng = np.random.default_rng(7)
    b = simulated_scores(rng, 4, 30)
    shift = np.array([0.10, 0.02, 0.15, 0.07])[:, None]
    a = b + shift
    result = paired_difference(a, b)
    reference = stats.ttest_rel(100 * a.mean(axis=1), 100 * b.mean(axis=1))
    assert result.difference == pytest.approx(100 * shift.mean())
    assert result.p_value == pytest.approx(reference.pvalue)
    low, high = reference.confidence_interval(0.95)
    assert (result.low, result.high) == (pytest.approx(low), pytest.approx(high))
    assert result.per_seed == pytest.approx(tuple(100 * shift[:, 0]))


def test_p_value_and_interval_agree_at_every_level():
    rng = np.random.default_rng(8)
    effects = rng.normal(0, 1.5, (1, 150))
    a = simulated_scores(rng, 3, 150, question_effects=effects, mean_logit=1.3, seed_sd=0.5)
    b = simulated_scores(rng, 3, 150, question_effects=effects, mean_logit=1.0, seed_sd=0.5)
    result = paired_difference(a, b)
    assert 0 < result.p_value < 1
    # At confidence 1 − p the interval just reaches 0.
    edge = result.at_level(1 - result.p_value)
    assert min(abs(edge.low), abs(edge.high)) == pytest.approx(0, abs=1e-9)
    assert result.at_level(0.5) == dataclasses.replace(result, low=result.at_level(0.5).low,
                                                       high=result.at_level(0.5).high, confidence=0.5)


def test_a_clear_difference_has_p_zero_and_a_point_interval():
    result = paired_difference(np.ones((3, 50)), np.zeros((3, 50)))
    assert (result.difference, result.low, result.high, result.p_value) == (100.0, 100.0, 100.0, 0.0)


def test_a_difference_carried_by_two_of_three_seeds_is_not_resolved():
    # Seeds 0 and 1 favour a on every question, seed 2 favours b: every question's mean
    # difference is +1/3 (a question-level test would reject), but the seeds disagree.
    a = np.array([[1.0] * 40, [1.0] * 40, [0.0] * 40])
    result = paired_difference(a, 1 - a)
    assert result.difference == pytest.approx(100 / 3)
    assert result.low < 0 < result.high and result.p_value > 0.4
    assert result.seed_sd == pytest.approx(np.std([100, 100, -100], ddof=1))


def test_paired_arrays_must_have_the_same_shape():
    with pytest.raises(ValueError, match=r"a has shape \(3, 10\) but b has \(2, 10\)"):
        paired_difference(np.zeros((3, 10)), np.zeros((2, 10)))
    with pytest.raises(ValueError, match="b: expected finite"):
        paired_difference(np.zeros((1, 2)), [[0, math.nan]])


# --------------------------------------------------------------------------- memorization ratio


def test_ratio_of_original_to_original_plus_substitute():
    original = [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    substitute = [[0, 0, 0, 1, 0], [0, 0, 1, 1, 0]]      # the last answer is "other"
    result = ratio_interval(original, substitute)
    assert result.estimate == pytest.approx(100 * 5 / 8)
    assert result.per_seed == pytest.approx((75.0, 50.0))
    assert 0 <= result.low <= result.estimate <= result.high <= 100


def test_ratio_without_other_answers_is_the_mean_of_original():
    # Every cell is original or substitute: M_R is the share of originals and its linearised
    # interval is exactly the mean's.
    original = simulated_scores(np.random.default_rng(9), 3, 90)
    ratio = ratio_interval(original, 1 - original)
    mean = mean_interval(original)
    assert (ratio.estimate, ratio.low, ratio.high) == (pytest.approx(mean.estimate), pytest.approx(mean.low),
                                                       pytest.approx(mean.high))


def test_undefined_ratio_is_nan():
    nothing = ratio_interval(np.zeros((2, 3)), np.zeros((2, 3)))
    assert math.isnan(nothing.estimate) and math.isnan(nothing.low) and math.isnan(nothing.high)
    one_seed_silent = ratio_interval([[1, 0], [0, 0]], [[0, 1], [0, 0]])
    assert one_seed_silent.estimate == 50.0 and math.isnan(one_seed_silent.per_seed[1])


def test_ratio_input_must_be_one_class_per_cell():
    with pytest.raises(ValueError, match="both original and substitute"):
        ratio_interval([[1, 0]], [[1, 0]])
    with pytest.raises(ValueError, match="0/1 values"):
        ratio_interval([[0.5, 0]], [[0, 1]])
    with pytest.raises(ValueError, match="same seeds × questions"):
        ratio_interval([[1, 0]], [[0, 1, 0]])


def test_paired_ratio_difference():
    original = simulated_scores(np.random.default_rng(10), 3, 60)
    other = simulated_scores(np.random.default_rng(11), 3, 60, mean_logit=0.0)
    same = paired_ratio_difference(original, 1 - original, original, 1 - original)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # With no "other" answers the ratios are means of `original`: the paired mean difference.
    ratio = paired_ratio_difference(original, 1 - original, other, 1 - other)
    mean = paired_difference(original, other)
    assert (ratio.difference, ratio.low, ratio.high, ratio.p_value) == (
        pytest.approx(mean.difference), pytest.approx(mean.low), pytest.approx(mean.high), pytest.approx(mean.p_value))


def test_unpaired_ratio_difference_pairs_the_seeds_of_both_sets():
    # Seed 0 answers every question of both sets from memory, seed 1 from the context: the
    # per-seed differences are 0, so the difference is resolved as exactly 0.
    seen_original = np.array([[1] * 30, [0] * 30])
    test_original = np.array([[1] * 50, [0] * 50])
    result = unpaired_ratio_difference(seen_original, 1 - seen_original, test_original, 1 - test_original)
    assert (result.n_questions_a, result.n_questions_b) == (30, 50)
    assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_unpaired_ratio_difference_adds_both_question_components():
    rng = np.random.default_rng(12)
    seen = simulated_scores(rng, 3, 40, seed_sd=0.0)
    test = simulated_scores(rng, 3, 70, seed_sd=0.0, mean_logit=0.0)
    result = unpaired_ratio_difference(seen, 1 - seen, test, 1 - test)
    question = math.hypot(crossed_standard_error(100 * seen)[1], crossed_standard_error(100 * test)[1])
    assert result.question_se == pytest.approx(question)
    assert result.difference == pytest.approx(100 * (seen.mean() - test.mean()))


def test_unpaired_ratio_difference_needs_the_same_seeds():
    with pytest.raises(ValueError, match="a has 3 seeds but b has 2"):
        unpaired_ratio_difference(np.ones((3, 4)), np.zeros((3, 4)), np.ones((2, 5)), np.zeros((2, 5)))


# --------------------------------------------------------------------------- Holm and decisions


def test_holm_adjustment_by_hand():
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06.
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm_adjust([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm_adjust([0.02]), [0.02])
    assert holm_adjust([]).size == 0


def test_holm_rejects_what_bonferroni_rejects_and_no_more_than_unadjusted():
    p_values = np.random.default_rng(15).uniform(0, 0.1, 9)
    adjusted = holm_adjust(p_values)
    assert np.all(adjusted >= p_values)
    assert np.all(adjusted <= np.minimum(1, 9 * p_values))


@pytest.mark.parametrize("p_values", [[0.1, math.nan], [1.2], [-0.1], [[0.1, 0.2]]])
def test_holm_rejects_invalid_p_values(p_values):
    with pytest.raises(ValueError, match="p_values"):
        holm_adjust(p_values)


def _family(rng, size: int, seeds: int = 5) -> list[Difference]:
    """Differences of `size` methods with effects from none to large, against one reference."""
    reference = simulated_scores(rng, seeds, 60, seed_sd=0.3)
    return [paired_difference(simulated_scores(rng, seeds, 60, mean_logit=1.0 + shift, seed_sd=0.3), reference)
            for shift in rng.uniform(-1.0, 1.0, size)]


def test_decisions_are_holm_and_their_intervals_say_the_same():
    rng = np.random.default_rng(16)
    checked = significant = 0
    for _ in range(40):
        family = _family(rng, 6)
        decisions = decide(family)
        assert all(isinstance(d, Decision) for d in decisions)
        np.testing.assert_allclose([d.holm_p for d in decisions], holm_adjust([d.p_value for d in family]))
        for raw, decision in zip(family, decisions):
            assert decision.family_size == 6 and decision.difference.difference == raw.difference
            # Between the unadjusted level and the Bonferroni one.
            assert 1 - 0.05 - 1e-12 <= decision.difference.confidence <= 1 - 0.05 / 6 + 1e-12
            excludes_zero = decision.difference.low > 0 or decision.difference.high < 0
            assert excludes_zero == decision.significant == (decision.holm_p < 0.05)
            checked += 1
            significant += decision.significant
    assert 0 < significant < checked                 # both outcomes were exercised


def test_the_smallest_p_gets_the_bonferroni_level():
    family = _family(np.random.default_rng(17), 4)
    smallest = min(range(4), key=lambda i: family[i].p_value)
    assert decide(family)[smallest].difference.confidence == pytest.approx(1 - 0.05 / 4)


def test_untestable_comparisons_stay_out_of_the_family():
    one_seed = paired_difference([[1, 0, 1]], [[0, 0, 1]])
    family = _family(np.random.default_rng(18), 2) + [one_seed]
    decisions = decide(family)
    assert [d.family_size for d in decisions] == [2, 2, 2]
    assert math.isnan(decisions[2].holm_p) and not decisions[2].significant
    assert decisions[2].difference == one_seed
    with pytest.raises(ValueError, match="alpha"):
        decide(family, alpha=1.5)


# --------------------------------------------------------------------------- power


def power_by_integration(difference: float, standard_error: float, df: int, alpha: float) -> float:
    """P(|Z + δ| / √(V/df) > c), V ~ χ²_df, written as an integral over V (no noncentral t)."""
    critical = stats.t.ppf(1 - alpha / 2, df)
    delta = difference / standard_error

    def integrand(v):
        scale = critical * math.sqrt(v / df)
        return (stats.norm.sf(scale - delta) + stats.norm.cdf(-scale - delta)) * stats.chi2.pdf(v, df)

    return integrate.quad(integrand, 0, np.inf)[0]


@pytest.mark.parametrize("difference, standard_error, df, tests", [
    (20.0, 4.0, 2, 1), (45.0, 4.0, 2, 8), (6.0, 2.5, 7, 1), (9.0, 2.5, 7, 8)])
def test_t_test_power_matches_an_independent_integral(difference, standard_error, df, tests):
    assert t_test_power(difference, standard_error, df, tests=tests) == pytest.approx(
        power_by_integration(difference, standard_error, df, 0.05 / tests), abs=1e-6)


def test_minimum_detectable_difference_reaches_the_requested_power():
    for standard_error, df, tests in ((3.75, 2, 1), (3.75, 2, 8), (2.0, 7, 8), (1.0, 30, 1)):
        mde = minimum_detectable_difference(standard_error, df, tests=tests)
        assert power_by_integration(mde, standard_error, df, 0.05 / tests) == pytest.approx(0.8, abs=1e-5)
    # Cohen (1988): a two-sample t-test with 64 per group detects d = 0.5 at 80 % power
    # (power 0.8015 there, so the detectable d is just below 0.5).
    assert minimum_detectable_difference(math.sqrt(2 / 64), 126) == pytest.approx(0.499, abs=0.001)
    # The normal approximation (t_crit + z_0.8) · SE is optimistic with 2 degrees of freedom.
    approximate = (stats.t.ppf(0.975, 2) + stats.norm.ppf(0.8)) * 3.75
    assert minimum_detectable_difference(3.75, 2) > approximate
    assert math.isnan(minimum_detectable_difference(3.0, 0)) and math.isnan(minimum_detectable_difference(0.0, 2))


def test_seeds_needed_is_the_first_seed_count_that_detects_the_difference():
    for difference, seed_sd, question_se, tests in ((5.0, 6.5, 0.0, 1), (10.0, 9.9, 1.5, 8), (5.0, 4.0, 1.0, 8)):
        needed = seeds_needed(difference, seed_sd=seed_sd, question_se=question_se, tests=tests)

        def mde(seeds):
            return minimum_detectable_difference(math.hypot(seed_sd / math.sqrt(seeds), question_se), seeds - 1,
                                                 tests=tests)

        assert mde(needed) <= difference < mde(needed - 1)
    # Question sampling alone already hides a difference of 2 points: no seed count helps.
    assert seeds_needed(2.0, seed_sd=5.0, question_se=3.0, max_seeds=200) is None
    with pytest.raises(ValueError, match="positive difference"):
        seeds_needed(0.0, seed_sd=5.0)


def test_comparisons_without_any_spread_or_difference_do_not_count_in_the_family():
    # Two methods that never answer an empty context: p = 1 at any level, so (as in Tarone's
    # procedure) they do not enlarge the family; their adjusted p is 1.
    silent = paired_difference(np.zeros((3, 20)), np.zeros((3, 20)))
    family = _family(np.random.default_rng(19), 3)
    decisions = decide(family + [silent, silent])
    assert [d.family_size for d in decisions] == [3] * 5
    np.testing.assert_allclose([d.holm_p for d in decisions[:3]], holm_adjust([d.p_value for d in family]))
    assert [d.holm_p for d in decisions[3:]] == [1.0, 1.0] and not any(d.significant for d in decisions[3:])
