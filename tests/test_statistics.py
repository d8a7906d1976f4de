"""Across-seed statistics: hand-computed cases, agreement with scipy, coverage, bad input."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from cfqa.statistics import (
    Difference,
    Interval,
    holm_adjust,
    mean_interval,
    paired_difference,
    paired_ratio_difference,
    ratio_interval,
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


# --------------------------------------------------------------------------- mean_interval


def test_one_seed_mean_is_percent_of_correct_answers():
    result = mean_interval([[1, 0, 1, 1]])
    assert isinstance(result, Interval)
    assert result.estimate == 75.0
    assert (result.n_seeds, result.n_questions) == (1, 4)
    assert result.seed_variance_covered is False
    assert math.isnan(result.seed_sd)
    # Resampled means of 4 answers lie on the grid 0, 25, ..., 100.
    assert 0 <= result.low < 75 < result.high <= 100
    assert {result.low % 25, result.high % 25} == {0.0}
    assert mean_interval([[1, 0, 1, 1]], scale=1).estimate == 0.75


def test_mean_over_seeds_of_per_seed_means_and_seed_spread():
    result = mean_interval([[1, 1, 0], [0, 0, 0]])
    assert result.estimate == pytest.approx(100 / 3)
    assert result.seed_variance_covered is True
    assert result.seed_sd == pytest.approx(np.std([200 / 3, 0], ddof=1))


def test_constant_scores_give_a_zero_width_interval():
    result = mean_interval(np.full((3, 10), 0.6))
    assert result.estimate == pytest.approx(60.0)
    assert result.low == pytest.approx(60.0) and result.high == pytest.approx(60.0)
    assert result.seed_sd == pytest.approx(0.0)


def test_one_seed_interval_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(11)
    scores = rng.beta(2, 3, size=200)                 # per-question token F1 in [0, 1]
    ours = mean_interval(scores[None, :], resamples=20_000, seed=1, scale=1)
    theirs = stats.bootstrap((scores,), np.mean, method="percentile", n_resamples=20_000,
                             rng=np.random.default_rng(2)).confidence_interval
    # Monte-Carlo error of a 2.5 % quantile with 20k resamples is ~0.02 standard errors.
    standard_error = scores.std(ddof=1) / math.sqrt(scores.size)
    assert ours.estimate == pytest.approx(scores.mean())
    assert ours.low == pytest.approx(theirs.low, abs=0.15 * standard_error)
    assert ours.high == pytest.approx(theirs.high, abs=0.15 * standard_error)


def test_questions_are_resampled_jointly_across_seeds():
    # Identical seeds: with the same question draws for every seed the interval is as wide as
    # one seed's; drawing questions per seed would shrink it by about √3.
    row = np.random.default_rng(3).random(150) < 0.6
    one = mean_interval(row[None, :], resamples=4000, seed=4)
    three = mean_interval(np.tile(row, (3, 1)), resamples=4000, seed=4)
    assert (three.high - three.low) / (one.high - one.low) == pytest.approx(1.0, abs=0.1)


def test_interval_covers_the_true_mean_in_simulated_experiments():
    # 3 seeds × 100 questions with question difficulty (SD 1.5 logits) and small seed effects
    # (SD 0.2): the regime where a few seeds are enough. The true mean is the model's
    # expected accuracy over seeds and questions.
    rng = np.random.default_rng(20)
    truth = 100 * expit(1.0 + rng.normal(0, 0.2, 1_000_000) + rng.normal(0, 1.5, 1_000_000)).mean()
    covered = 0
    for experiment in range(200):
        result = mean_interval(simulated_scores(rng, 3, 100), resamples=1000, seed=experiment)
        covered += result.low <= truth <= result.high
    assert 0.88 <= covered / 200 <= 0.99


def test_same_seed_reproduces_and_generators_are_accepted():
    scores = simulated_scores(np.random.default_rng(5), 3, 60)
    assert mean_interval(scores, seed=7) == mean_interval(scores, seed=7)
    assert mean_interval(scores, seed=7) != mean_interval(scores, seed=8)
    assert (mean_interval(scores, seed=np.random.default_rng(9))
            == mean_interval(scores, seed=np.random.default_rng(9)))
    assert paired_difference(scores, scores[::-1], seed=3) == paired_difference(scores, scores[::-1], seed=3)


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


@pytest.mark.parametrize("options, message", [
    (dict(confidence=1.0), "confidence"),
    (dict(confidence=0), "confidence"),
    (dict(resamples=0), "resamples"),
])
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        mean_interval([[1, 0]], **options)


# --------------------------------------------------------------------------- paired_difference


def test_identical_methods_differ_by_zero_with_p_one():
    scores = simulated_scores(np.random.default_rng(6), 3, 80)
    result = paired_difference(scores, scores.copy())
    assert isinstance(result, Difference)
    assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert result.significant is False


def test_exact_sign_flip_p_value_matches_scipy():
    rng = np.random.default_rng(7)
    a = simulated_scores(rng, 3, 8)
    b = simulated_scores(rng, 3, 8, mean_logit=0.0)
    ours = paired_difference(a, b, permutations=256, scale=1)
    assert ours.exact_permutation is True and ours.permutations == 256
    theirs = stats.permutation_test((a.mean(axis=0), b.mean(axis=0)),
                                    lambda x, y, axis: np.mean(x - y, axis=axis),
                                    permutation_type="samples", vectorized=True, n_resamples=np.inf)
    assert ours.difference == pytest.approx(theirs.statistic)
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-12)


def test_randomized_sign_flip_p_value_agrees_with_scipy_within_monte_carlo_error():
    rng = np.random.default_rng(8)
    effects = rng.normal(0, 1.5, (1, 250))
    a = simulated_scores(rng, 3, 250, question_effects=effects, mean_logit=1.0)
    b = simulated_scores(rng, 3, 250, question_effects=effects, mean_logit=0.85)
    ours = paired_difference(a, b, permutations=10_000, seed=1)
    theirs = stats.permutation_test((a.mean(axis=0), b.mean(axis=0)),
                                    lambda x, y, axis: np.mean(x - y, axis=axis),
                                    permutation_type="samples", vectorized=True, n_resamples=10_000,
                                    rng=np.random.default_rng(2))
    assert ours.exact_permutation is False
    assert 0.005 < theirs.pvalue < 0.5                # a p-value where the comparison means something
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=4 * math.sqrt(theirs.pvalue / 10_000) + 0.003)
    assert ours.difference == pytest.approx(100 * (a - b).mean())


def test_a_clear_difference_is_significant():
    result = paired_difference(np.ones((3, 50)), np.zeros((3, 50)), permutations=999)
    assert (result.difference, result.low, result.high) == (100.0, 100.0, 100.0)
    assert result.p_value == pytest.approx(1 / 1000)
    assert result.significant is True


def test_a_difference_carried_by_two_of_three_seeds_is_not_significant():
    # Seeds 0 and 1 favour a on every question, seed 2 favours b: every question's mean
    # difference is +1/3, so the question-level permutation test rejects, but resampling
    # seeds (2 or 3 draws of seed 2 happen in a quarter of resamples) reaches −100.
    a = np.array([[1.0] * 40, [1.0] * 40, [0.0] * 40])
    result = paired_difference(a, 1 - a, permutations=999)
    assert result.difference == pytest.approx(100 / 3)
    assert result.p_value < 0.01
    assert result.low < 0 < result.high
    assert result.significant is False
    assert result.seed_sd == pytest.approx(np.std([100, 100, -100], ddof=1))


def test_sign_flip_p_value_is_calibrated_under_the_null():
    rng = np.random.default_rng(9)
    rejections = 0
    for experiment in range(200):
        effects = rng.normal(0, 1.5, (1, 100))
        a = simulated_scores(rng, 3, 100, question_effects=effects, seed_sd=0.0)
        b = simulated_scores(rng, 3, 100, question_effects=effects, seed_sd=0.0)
        rejections += paired_difference(a, b, resamples=200, permutations=500, seed=experiment).p_value < 0.05
    assert 0.01 <= rejections / 200 <= 0.10


def test_paired_arrays_must_have_the_same_shape():
    with pytest.raises(ValueError, match=r"a has shape \(3, 10\) but b has \(2, 10\)"):
        paired_difference(np.zeros((3, 10)), np.zeros((2, 10)))
    with pytest.raises(ValueError, match="b: expected finite"):
        paired_difference(np.zeros((1, 2)), [[0, math.nan]])
    with pytest.raises(ValueError, match="permutations"):
        paired_difference(np.zeros((1, 2)), np.zeros((1, 2)), permutations=0)


# --------------------------------------------------------------------------- memorization ratio


def test_ratio_of_original_to_original_plus_substitute():
    original = [[1, 1, 1, 0, 0]]
    substitute = [[0, 0, 0, 1, 0]]                    # the last answer is "other"
    result = ratio_interval(original, substitute)
    assert result.estimate == 75.0
    assert 0 <= result.low <= 75 <= result.high <= 100


def test_undefined_resamples_are_skipped_and_counted():
    # One original answer among "other" answers: M_R is 100 where it is drawn, undefined
    # (0 / 0) where it is not, which happens with probability (3/4)^4 ≈ 0.32.
    result = ratio_interval([[1, 0, 0, 0]], [[0, 0, 0, 0]], resamples=4000)
    assert (result.estimate, result.low, result.high) == (100.0, 100.0, 100.0)
    assert result.skipped_resamples / 4000 == pytest.approx((3 / 4) ** 4, abs=0.03)
    nothing = ratio_interval(np.zeros((2, 3)), np.zeros((2, 3)), resamples=100)
    assert math.isnan(nothing.estimate) and math.isnan(nothing.low) and nothing.skipped_resamples == 100


def test_ratio_pools_cells_over_seeds():
    original = [[1, 1, 1, 1], [1, 0, 0, 0]]
    substitute = [[0, 0, 0, 0], [0, 1, 1, 1]]
    result = ratio_interval(original, substitute)
    assert result.estimate == pytest.approx(100 * 5 / 8)
    assert result.seed_sd == pytest.approx(np.std([100, 25], ddof=1))


def test_ratio_input_must_be_one_class_per_cell():
    with pytest.raises(ValueError, match="both original and substitute"):
        ratio_interval([[1, 0]], [[1, 0]])
    with pytest.raises(ValueError, match="0/1 values"):
        ratio_interval([[0.5, 0]], [[0, 1]])
    with pytest.raises(ValueError, match="same seeds × questions"):
        ratio_interval([[1, 0]], [[0, 1, 0]])


def test_paired_ratio_difference_exact_permutation_by_hand():
    # a: M_R 75, b: M_R 25. Questions 0 and 3 have the same class in a and b, so swapping
    # them changes nothing; swapping one of questions 1, 2 gives 50 − 50 = 0, both gives
    # 25 − 75 = −50. |T*| ≥ 50 in 8 of the 16 sign patterns: p = 1/2.
    result = paired_ratio_difference([[1, 1, 1, 0]], [[0, 0, 0, 1]], [[1, 0, 0, 0]], [[0, 1, 1, 1]])
    assert result.difference == 50.0
    assert result.exact_permutation is True and result.permutations == 16
    assert result.p_value == 0.5
    assert result.significant is False


def test_paired_ratio_difference_agrees_with_scipy_permutation_test():
    rng = np.random.default_rng(12)
    classes_a = rng.choice(3, size=(3, 10), p=[0.5, 0.3, 0.2])
    classes_b = rng.choice(3, size=(3, 10), p=[0.2, 0.6, 0.2])
    ours = paired_ratio_difference(classes_a == 0, classes_a == 1, classes_b == 0, classes_b == 1,
                                   permutations=1024)

    # scipy swaps x[i] with y[i]; x and y are question indices into a's and b's per-question
    # counts (summed over seeds), so a swap moves a question's counts from one method to the other.
    original = np.concatenate([(classes_a == 0).sum(axis=0), (classes_b == 0).sum(axis=0)])
    substitute = np.concatenate([(classes_a == 1).sum(axis=0), (classes_b == 1).sum(axis=0)])

    def ratio_difference(x, y):
        ratio = lambda rows: 100 * original[rows].sum() / (original[rows].sum() + substitute[rows].sum())
        return ratio(x) - ratio(y)

    theirs = stats.permutation_test((np.arange(10), np.arange(10, 20)), ratio_difference,
                                    permutation_type="samples", vectorized=False, n_resamples=np.inf)
    assert ours.difference == pytest.approx(theirs.statistic)
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-12)


def test_identical_ratio_inputs_differ_by_zero_with_p_one():
    rng = np.random.default_rng(13)
    classes = rng.choice(3, size=(3, 120))
    result = paired_ratio_difference(classes == 0, classes == 1, classes == 0, classes == 1)
    assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_unpaired_ratio_difference_exact_split_by_hand():
    # Set a all original (M_R 100), set b all substitute (0). Of the 6 ways to split the four
    # questions into two sets of two, 2 give |difference| 100 and 4 give 0: p = 1/3.
    result = unpaired_ratio_difference([[1, 1]], [[0, 0]], [[0, 0]], [[1, 1]])
    assert result.difference == 100.0
    assert result.exact_permutation is True and result.permutations == 6
    assert result.p_value == pytest.approx(1 / 3)


def test_unpaired_ratio_difference_resamples_seeds_jointly():
    # Seed 0 answers every question of both sets from memory, seed 1 from the context: with
    # the same seed draws on both sides the two ratios move together and the difference
    # never leaves 0; drawing seeds per side would spread it over ±100.
    seen_original = np.array([[1] * 30, [0] * 30])
    test_original = np.array([[1] * 50, [0] * 50])
    result = unpaired_ratio_difference(seen_original, 1 - seen_original, test_original, 1 - test_original)
    assert (result.n_questions_a, result.n_questions_b) == (30, 50)
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)


def test_unpaired_ratio_difference_needs_the_same_seeds():
    with pytest.raises(ValueError, match="a has 3 seeds but b has 2"):
        unpaired_ratio_difference(np.ones((3, 4)), np.zeros((3, 4)), np.ones((2, 5)), np.zeros((2, 5)))


def test_ratio_difference_is_reproducible():
    rng = np.random.default_rng(14)
    seen, test = rng.choice(3, size=(3, 60)), rng.choice(3, size=(3, 90))
    run = lambda: unpaired_ratio_difference(seen == 0, seen == 1, test == 0, test == 1, seed=5)
    assert run() == run()
    assert dataclasses.asdict(run())["skipped_resamples"] == 0


# --------------------------------------------------------------------------- Holm


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
