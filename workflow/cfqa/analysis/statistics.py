"""Seed-level statistics for comparing fine-tuning methods: intervals, tests, Holm, power.

Every method is trained with several seeds and every trained model answers the same questions,
so results come as seeds × questions arrays. The seed is the unit of replication: a training
run is one draw of everything that varies between runs (initialisation, data order, floating-
point differences between machines), and what one run does says little about the next. Each
number the report shows is a mean over seeds with an interval whose small-sample behaviour is
right with three seeds, and each comparison with full fine-tuning is paired on seeds and
questions.

Design (shared by every function below; chosen by the simulation tests in
tests/test_statistics_coverage.py, which draw seeds × questions 0/1 arrays from a logit model
with question difficulty, method × question and seed × answer-type effects):

* The estimand is a method's expected score over new seeds AND new questions of the same kind.
  A statistic that is a mean over the cells of seeds × questions arrays has, in the crossed
  random-effects model (seed effect, question effect, residual), the variance
  Var = σ²_seed / S + σ²_question / Q + σ²_residual / (S·Q). With the two-way ANOVA mean
  squares of the array (MS_s seeds, MS_q questions, MS_e residual) it is estimated without
  bias by MS_s / (S·Q) + (MS_q − MS_e) / (S·Q) = var(per-seed means) / S + σ̂²_question / Q: the
  variance of the per-seed values (which already holds the residual) plus the question-
  sampling component the seeds share (truncated at 0). This is the method-of-moments
  (balanced-design REML) estimate of the crossed mixed model, in closed form: no iterative
  fit, and exact for any number of seeds ≥ 2.
* Degrees of freedom S − 1, the seed term's, whatever the question term adds. Satterthwaite's
  degrees of freedom for the sum (what lmerTest would use) were tried and rejected by the
  simulation: with 3 seeds the estimated degrees of freedom jump up whenever the seed
  variance happens to come out small, so 95 % intervals of means covered 92 % at a seed SD of
  5–9 points, and eight null methods compared with full fine-tuning gave a family-wise
  false-positive rate of 6–11 % under Holm. S − 1 is the conservative bound of Hsu (1938) and
  Mickey & Brown (1966) for a sum of independent variance estimates: it covered 95.6–99.9 % in
  every simulated case, widest (too wide) for single-method means with 3 seeds and a small
  seed spread, where question sampling dominates; the family-wise rate stayed at 1–3 %. With
  one seed there is no seed-level interval: the estimate comes alone (low, high and p NaN).
* Pairing: seed i of method a is paired with seed i of method b, and question j with question
  j. Seeds of different methods share the data order but not the initialisation; the
  simulation compared the paired interval (S − 1 degrees of freedom on per-seed differences)
  with an unpaired Welch interval on the seed means: Welch–Satterthwaite is less conservative
  when seeds are independent, but its family-wise false-positive rate reached 8 % when full
  fine-tuning was precise and the other methods noisy (seed SD 2 against 9 points); with
  Hsu's S − 1 degrees of freedom it almost never rejected (0–1 %). The paired test is valid
  whether or not seed i of two methods is correlated (the per-seed differences are independent
  across seeds either way) and gains when it is. Numbers: benchmarks/results/statistics_coverage.json.
* Memorization ratios M_R = Σ original / Σ (original + substitute) are ratios of cell sums: they
  are linearised (delta method) into per-cell influence values
  z = (o − M_R · (o + s)) / mean(o + s), whose cell mean has the ratio's first-order sampling
  variance, and z goes through the same crossed variance.
* Multiplicity: a table declares one family of comparisons; `decide` runs Holm over it and
  gives every comparison its interval at the level Holm's step-down applies to it,
  1 − α · p / p_Holm (1 − α/m for the smallest p, never below 1 − α/m nor above 1 − α), so
  "the interval excludes 0" and "Holm-adjusted p < α" are the same statement: one predicate,
  `Decision.significant`. The intervals are not simultaneous (the family-wise guarantee is the
  decisions'); the Bonferroni level 1 − α/m is the widest any of them gets.
* Power: `minimum_detectable_difference` inverts the two-sided t-test's power with the exact
  noncentral t distribution (not the normal approximation (t_{1−α/2} + z_power) · SE, which is
  optimistic with few degrees of freedom), at the per-comparison level α/m of the first Holm
  step; `seeds_needed` finds the seed count at which a given difference becomes detectable.

Inputs are seeds × questions arrays; everything is pure (no I/O) and deterministic.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import optimize, special

DEFAULT_CONFIDENCE = 0.95
DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8


@dataclass(frozen=True)
class Interval:
    """A seed-level statistic over seeds × questions with its t interval (S − 1 df).

    `estimate` is the mean over seeds of the per-seed mean (× scale), or for a ratio the
    pooled memorization ratio in percent. `per_seed` holds each seed's own value (the dots of
    the figures; NaN for a ratio where that seed gave no original and no substitute answer),
    `seed_sd` their standard deviation (ddof 1, NaN with one seed). The standard error is
    hypot(`seed_se`, `question_se`): the spread of the per-seed values and the question-sampling
    component; `df` is S − 1. With one seed `low`, `high` and the standard errors are NaN.
    """

    estimate: float
    low: float
    high: float
    n_seeds: int
    n_questions: int
    confidence: float
    standard_error: float
    seed_se: float
    question_se: float
    df: int
    seed_sd: float
    per_seed: tuple[float, ...]
    bounds: tuple[float, float] = (-math.inf, math.inf)

    @property
    def seed_variance_covered(self) -> bool:
        return self.n_seeds > 1


@dataclass(frozen=True)
class Difference:
    """a − b with its seed-level t interval and two-sided t-test p-value (S − 1 df).

    Paired comparisons have n_questions_a == n_questions_b. `per_seed` holds each seed's own
    difference, `seed_sd` their standard deviation. `at_level` gives the same difference with
    its interval at another confidence level (what `decide` does for Holm).
    """

    difference: float
    low: float
    high: float
    p_value: float
    n_seeds: int
    n_questions_a: int
    n_questions_b: int
    confidence: float
    standard_error: float
    seed_se: float
    question_se: float
    df: int
    seed_sd: float
    per_seed: tuple[float, ...]
    bounds: tuple[float, float] = (-math.inf, math.inf)

    def at_level(self, confidence: float) -> Difference:
        _check_confidence(confidence)
        low, high = _limits(self.difference, self.standard_error, self.df, confidence, self.bounds)
        return dataclasses.replace(self, low=low, high=high, confidence=confidence)


@dataclass(frozen=True)
class Decision:
    """One comparison of a declared family after Holm: `difference` carries its interval at
    the level that matches the decision (see `decide`), so it excludes 0 exactly where
    `significant` is True. An untestable comparison (one seed) has `holm_p` NaN."""

    difference: Difference
    holm_p: float
    family_size: int
    alpha: float

    @property
    def significant(self) -> bool:
        """The one rule that calls a difference a difference: Holm-adjusted p below α."""
        return not math.isnan(self.holm_p) and self.holm_p < self.alpha


# --------------------------------------------------------------------------- validation


def _scores(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D seeds × questions array, got shape {array.shape} "
                         "(one seed: pass values[None, :])")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one seed and one question, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"{name}: expected finite values, found {array[tuple(bad)]} at seed {bad[0]}, "
                         f"question {bad[1]}")
    return array


def _indicator(values, name: str) -> np.ndarray:
    array = _scores(values, name)
    if not np.all((array == 0) | (array == 1)):
        bad = np.argwhere((array != 0) & (array != 1))[0]
        raise ValueError(f"{name}: expected 0/1 values, found {array[tuple(bad)]} at seed {bad[0]}, "
                         f"question {bad[1]}")
    return array


def _classes(is_original, is_substitute, name: str) -> tuple[np.ndarray, np.ndarray]:
    original = _indicator(is_original, f"{name} is_original")
    substitute = _indicator(is_substitute, f"{name} is_substitute")
    if original.shape != substitute.shape:
        raise ValueError(f"{name}: is_original has shape {original.shape} but is_substitute has "
                         f"{substitute.shape}; expected the same seeds × questions")
    both = (original == 1) & (substitute == 1)
    if both.any():
        bad = np.argwhere(both)[0]
        raise ValueError(f"{name}: seed {bad[0]}, question {bad[1]} is both original and substitute; "
                         "expected at most one class per cell")
    return original, substitute


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: a has shape {a.shape} but b has {b.shape}; expected the same "
                         "seeds × questions (seed i and question j of a paired with those of b)")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence}")


# --------------------------------------------------------------------------- the crossed variance


@dataclass(frozen=True)
class _Crossed:
    estimate: float
    per_seed: np.ndarray       # the statistic's per-seed values (mean of cells, summed over groups)
    seed_se: float
    question_se: float
    n_seeds: int

    @property
    def standard_error(self) -> float:
        return math.hypot(self.seed_se, self.question_se)

    @property
    def df(self) -> int:
        return self.n_seeds - 1


def _question_variance(cells: np.ndarray) -> float:
    """σ̂²_question / Q of one seeds × questions array: (MS_q − MS_e) / (S·Q), at least 0.
    Sums of squares by the two-way identity SS_total = SS_seeds + SS_questions + SS_residual."""
    n_seeds, n_questions = cells.shape
    if n_seeds < 2 or n_questions < 2:
        return 0.0
    centred = cells - cells.mean()
    seed_part = centred.mean(axis=1)
    question_part = centred.mean(axis=0)
    ss_seeds = n_questions * float(seed_part @ seed_part)
    ss_questions = n_seeds * float(question_part @ question_part)
    ss_residual = max(0.0, float(np.vdot(centred, centred)) - ss_seeds - ss_questions)
    ms_questions = ss_questions / (n_questions - 1)
    ms_residual = ss_residual / ((n_seeds - 1) * (n_questions - 1))
    return max(0.0, ms_questions - ms_residual) / (n_seeds * n_questions)


def _crossed(groups: Sequence[np.ndarray]) -> _Crossed:
    """Σ_g mean(groups[g]) with its crossed standard error; every group is seeds × its own
    questions, row i of each = the same seed (the groups' seed terms add up per seed)."""
    per_seed = sum(g.mean(axis=1) for g in groups)
    n_seeds = per_seed.size
    if n_seeds < 2:
        return _Crossed(estimate=float(per_seed.mean()), per_seed=per_seed, seed_se=math.nan,
                        question_se=math.nan, n_seeds=n_seeds)
    deviations = per_seed - per_seed.mean()
    seed_variance = float(deviations @ deviations) / (n_seeds - 1) / n_seeds
    question_variance = sum(_question_variance(g) for g in groups)
    return _Crossed(estimate=float(per_seed.mean()), per_seed=per_seed, seed_se=math.sqrt(seed_variance),
                    question_se=math.sqrt(question_variance), n_seeds=n_seeds)


def _limits(estimate: float, standard_error: float, df: int, confidence: float,
            bounds: tuple[float, float]) -> tuple[float, float]:
    """estimate ± t_{(1+confidence)/2, df} · SE, clipped to the statistic's range (a true value
    lies inside it, so clipping changes no coverage and no decision about 0)."""
    if df < 1 or math.isnan(standard_error) or math.isnan(estimate):
        return math.nan, math.nan
    half = float(special.stdtrit(df, 0.5 + confidence / 2)) * standard_error
    return max(bounds[0], estimate - half), min(bounds[1], estimate + half)


def _p_value(estimate: float, standard_error: float, df: int) -> float:
    """Two-sided t-test of 0; with no spread at all, 1 for an estimate of 0 and 0 otherwise."""
    if df < 1 or math.isnan(standard_error) or math.isnan(estimate):
        return math.nan
    if standard_error == 0:
        return 1.0 if estimate == 0 else 0.0
    return float(2 * special.stdtr(df, -abs(estimate) / standard_error))


def _seed_sd(per_seed: np.ndarray) -> float:
    defined = [float(v) for v in per_seed if not math.isnan(v)]
    if len(defined) < 2:
        return math.nan
    mean = sum(defined) / len(defined)
    return math.sqrt(sum((v - mean) ** 2 for v in defined) / (len(defined) - 1))


def _interval(crossed: _Crossed, *, estimate: float, per_seed: np.ndarray, n_questions: int, confidence: float,
              bounds: tuple[float, float]) -> Interval:
    low, high = _limits(estimate, crossed.standard_error, crossed.df, confidence, bounds)
    return Interval(estimate=estimate, low=low, high=high, n_seeds=crossed.n_seeds, n_questions=n_questions,
                    confidence=confidence, standard_error=crossed.standard_error, seed_se=crossed.seed_se,
                    question_se=crossed.question_se, df=crossed.df, seed_sd=_seed_sd(per_seed),
                    per_seed=tuple(float(v) for v in per_seed), bounds=bounds)


def _difference(crossed: _Crossed, *, estimate: float, per_seed: np.ndarray, n_a: int, n_b: int,
                confidence: float, bounds: tuple[float, float]) -> Difference:
    low, high = _limits(estimate, crossed.standard_error, crossed.df, confidence, bounds)
    return Difference(difference=estimate, low=low, high=high,
                      p_value=_p_value(estimate, crossed.standard_error, crossed.df), n_seeds=crossed.n_seeds,
                      n_questions_a=n_a, n_questions_b=n_b, confidence=confidence,
                      standard_error=crossed.standard_error, seed_se=crossed.seed_se,
                      question_se=crossed.question_se, df=crossed.df, seed_sd=_seed_sd(per_seed),
                      per_seed=tuple(float(v) for v in per_seed), bounds=bounds)


# --------------------------------------------------------------------------- means


def mean_interval(scores, *, confidence: float = DEFAULT_CONFIDENCE, scale: float = 100.0) -> Interval:
    """Mean over seeds of the per-seed mean of `scores` (seeds × questions), × `scale`.

    Per-question values are 0/1 correctness or floats (e.g. token F1) in [0, 1]; the default
    scale reports percent, and the interval is clipped to [0, scale].
    """
    _check_confidence(confidence)
    values = _scores(scores, "scores") * scale
    crossed = _crossed([values])
    return _interval(crossed, estimate=crossed.estimate, per_seed=crossed.per_seed, n_questions=values.shape[1],
                     confidence=confidence, bounds=(0.0, scale))


def seed_interval(values: Sequence[float], *, confidence: float = DEFAULT_CONFIDENCE,
                  bounds: tuple[float, float] = (0.0, math.inf)) -> Interval:
    """Mean of one measurement per seed (a cost: seconds, bytes, examples per second) with its
    t interval on S − 1 degrees of freedom: the seeds × questions interval above with a single
    "question", whose question term is 0. Clipped to `bounds` (costs are not negative)."""
    _check_confidence(confidence)
    per_seed = _scores(np.asarray(values, dtype=float).reshape(-1, 1), "values")
    crossed = _crossed([per_seed])
    return _interval(crossed, estimate=crossed.estimate, per_seed=crossed.per_seed, n_questions=1,
                     confidence=confidence, bounds=bounds)


def paired_difference(a, b, *, confidence: float = DEFAULT_CONFIDENCE, scale: float = 100.0) -> Difference:
    """Mean of a − b (× scale) for two methods' seeds × questions arrays on the same questions,
    seed i of `a` paired with seed i of `b` and question j with question j."""
    _check_confidence(confidence)
    first, second = _scores(a, "a"), _scores(b, "b")
    _same_shape(first, second, "paired_difference")
    crossed = _crossed([(first - second) * scale])
    return _difference(crossed, estimate=crossed.estimate, per_seed=crossed.per_seed, n_a=first.shape[1],
                       n_b=first.shape[1], confidence=confidence, bounds=(-scale, scale))


# --------------------------------------------------------------------------- memorization ratio


def _ratio(original, substitute):
    """100 · o / (o + s) elementwise; NaN where o + s = 0."""
    original, substitute = np.asarray(original, dtype=float), np.asarray(substitute, dtype=float)
    total = original + substitute
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 100.0 * original / np.where(total > 0, total, 1.0), np.nan)


def _influence(original: np.ndarray, substitute: np.ndarray) -> tuple[float, np.ndarray]:
    """The pooled ratio (percent) and its per-cell influence values: M_R − M_R(true) ≈ mean(z)."""
    counted = original + substitute
    ratio = float(_ratio(original.sum(), substitute.sum()))
    if math.isnan(ratio):
        return ratio, np.full(original.shape, math.nan)
    return ratio, (100.0 * original - ratio * counted) / counted.mean()


def ratio_interval(is_original, is_substitute, *, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Memorization ratio M_R = 100 · Σ original / (Σ original + Σ substitute), pooled over cells.

    `is_original` and `is_substitute` are seeds × questions 0/1 arrays (a cell is at most one
    of them; "other" answers, and cells left out of the ratio, are 0 in both). An undefined
    ratio (no original and no substitute answer) gives NaN throughout.
    """
    _check_confidence(confidence)
    original, substitute = _classes(is_original, is_substitute, "ratio_interval")
    ratio, influence = _influence(original, substitute)
    crossed = _crossed([influence])
    return _interval(crossed, estimate=ratio, per_seed=_ratio(original.sum(axis=1), substitute.sum(axis=1)),
                     n_questions=original.shape[1], confidence=confidence, bounds=(0.0, 100.0))


def paired_ratio_difference(is_original_a, is_substitute_a, is_original_b, is_substitute_b, *,
                            confidence: float = DEFAULT_CONFIDENCE) -> Difference:
    """M_R(a) − M_R(b) in percentage points, two methods on the same seeds × questions."""
    _check_confidence(confidence)
    orig_a, subst_a = _classes(is_original_a, is_substitute_a, "a")
    orig_b, subst_b = _classes(is_original_b, is_substitute_b, "b")
    _same_shape(orig_a, orig_b, "paired_ratio_difference")
    ratio_a, influence_a = _influence(orig_a, subst_a)
    ratio_b, influence_b = _influence(orig_b, subst_b)
    crossed = _crossed([influence_a - influence_b])
    per_seed = _ratio(orig_a.sum(axis=1), subst_a.sum(axis=1)) - _ratio(orig_b.sum(axis=1), subst_b.sum(axis=1))
    return _difference(crossed, estimate=ratio_a - ratio_b, per_seed=per_seed, n_a=orig_a.shape[1],
                       n_b=orig_b.shape[1], confidence=confidence, bounds=(-100.0, 100.0))


def unpaired_ratio_difference(is_original_a, is_substitute_a, is_original_b, is_substitute_b, *,
                              confidence: float = DEFAULT_CONFIDENCE) -> Difference:
    """M_R(a) − M_R(b) for two different question sets answered by the same seeds.

    E.g. the `seen` vs the `test` set: a is seeds × n_a, b is seeds × n_b, and row i of both
    is the same trained model, so the seed term is that of the per-seed differences and each
    set adds its own question-sampling component.
    """
    _check_confidence(confidence)
    orig_a, subst_a = _classes(is_original_a, is_substitute_a, "a")
    orig_b, subst_b = _classes(is_original_b, is_substitute_b, "b")
    if orig_a.shape[0] != orig_b.shape[0]:
        raise ValueError(f"unpaired_ratio_difference: a has {orig_a.shape[0]} seeds but b has "
                         f"{orig_b.shape[0]}; expected the same seeds (row i = the same trained model)")
    ratio_a, influence_a = _influence(orig_a, subst_a)
    ratio_b, influence_b = _influence(orig_b, subst_b)
    crossed = _crossed([influence_a, -influence_b])
    per_seed = _ratio(orig_a.sum(axis=1), subst_a.sum(axis=1)) - _ratio(orig_b.sum(axis=1), subst_b.sum(axis=1))
    return _difference(crossed, estimate=ratio_a - ratio_b, per_seed=per_seed, n_a=orig_a.shape[1],
                       n_b=orig_b.shape[1], confidence=confidence, bounds=(-100.0, 100.0))


# --------------------------------------------------------------------------- multiplicity


def holm_adjust(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending, p_(i) is multiplied by (m − i + 1), capped at 1, and made monotone with a
    running maximum; rejecting where the adjusted p < α controls the family-wise error rate
    at α under any dependence between the tests (comparisons with full fine-tuning share its
    runs, so they are dependent). Holm is uniformly more powerful than plain Bonferroni at the
    same guarantee.
    """
    values = np.asarray(p_values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"p_values: expected a 1-D sequence, got shape {values.shape}")
    if values.size and (np.any(np.isnan(values)) or np.any((values < 0) | (values > 1))):
        raise ValueError(f"p_values: expected values in [0, 1] without NaN, got {values.tolist()}")
    m = values.size
    order = np.argsort(values, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * values[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def decide(differences: Sequence[Difference], *, alpha: float = DEFAULT_ALPHA) -> tuple[Decision, ...]:
    """Holm over one declared family; each comparison's interval at the level that matches.

    The family is every difference with a p-value (one-seed differences have none and are not
    tested). A difference with no spread and no effect at all (every seed and question agrees:
    p = 1 at any level, e.g. two methods that never answer an empty context) cannot be rejected
    and is left out of the family size, as in Tarone's (1990) procedure for tests that cannot
    reach significance; its adjusted p is 1. A comparison with raw p and Holm-adjusted p̃ gets
    its interval at confidence 1 − α · p / p̃: the interval of a t-test excludes 0 exactly when
    p < α · p / p̃, that is when p̃ < α. Returned in the input order.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a value in (0, 1), got {alpha}")

    def degenerate(d: Difference) -> bool:
        return d.standard_error == 0 and d.difference == 0

    tested = [i for i, d in enumerate(differences) if not math.isnan(d.p_value) and not degenerate(d)]
    adjusted = dict(zip(tested, holm_adjust([differences[i].p_value for i in tested]).tolist()))
    size = len(tested)
    decisions = []
    for index, difference in enumerate(differences):
        holm = adjusted.get(index, 1.0 if not math.isnan(difference.p_value) else math.nan)
        if index in adjusted:
            share = difference.p_value / holm if holm > 0 else 1.0 / size
            difference = difference.at_level(1 - alpha * share)
        decisions.append(Decision(difference=difference, holm_p=holm, family_size=size, alpha=alpha))
    return tuple(decisions)


# --------------------------------------------------------------------------- power


def t_test_power(difference: float, standard_error: float, df: float, *, alpha: float = DEFAULT_ALPHA,
                 tests: int = 1) -> float:
    """Power of the two-sided t-test at level α / tests (Bonferroni, Holm's first step) to
    detect a true `difference` with this standard error: P(|T| > t_crit), T noncentral t."""
    if df < 1 or not standard_error > 0:
        return math.nan
    critical = float(special.stdtrit(df, 1 - alpha / (2 * tests)))
    noncentrality = abs(difference) / standard_error
    return 1 - _noncentral_t_cdf(df, noncentrality, critical) + _noncentral_t_cdf(df, noncentrality, -critical)


def _noncentral_t_cdf(df: float, noncentrality: float, t: float) -> float:
    """scipy's nctdtr, which returns NaN instead of a probability below ~1e-180 in the far
    tails (seen at df 17, noncentrality 41): there the probability is 0 to double precision."""
    value = float(special.nctdtr(df, noncentrality, t))
    return 0.0 if math.isnan(value) else value


def minimum_detectable_difference(standard_error: float, df: float, *, alpha: float = DEFAULT_ALPHA,
                                  power: float = DEFAULT_POWER, tests: int = 1) -> float:
    """The smallest true difference the two-sided t-test (df degrees of freedom, level
    α / tests) detects with probability `power`, given the standard error: noncentrality from
    the exact noncentral t, times the standard error. NaN without degrees of freedom or spread."""
    if not 0 < power < 1:
        raise ValueError(f"power: expected a value in (0, 1), got {power}")
    if tests < 1:
        raise ValueError(f"tests: expected at least 1, got {tests}")
    if df < 1 or not standard_error > 0 or math.isinf(standard_error):
        return math.nan
    def shortfall(delta: float) -> float:
        return t_test_power(delta, 1.0, df, alpha=alpha, tests=tests) - power

    # Power rises monotonically with the noncentrality; it is about 1/2 at the critical value,
    # so the root lies above 0 and below a bound found by doubling from there.
    upper = float(special.stdtrit(df, 1 - alpha / (2 * tests))) + 1.0
    while shortfall(upper) < 0:
        upper *= 2
    return float(optimize.brentq(shortfall, 0.0, upper, xtol=1e-10) * standard_error)


def seeds_needed(difference: float, *, seed_sd: float, question_se: float = 0.0, alpha: float = DEFAULT_ALPHA,
                 power: float = DEFAULT_POWER, tests: int = 1, max_seeds: int = 1000) -> int | None:
    """The fewest seeds with which a paired comparison detects `difference` at `power`.

    `seed_sd` is the standard deviation of the per-seed statistic (e.g. per-seed differences
    with full fine-tuning, residual noise included) and `question_se` the question-sampling
    standard error, which more seeds do not shrink; the test has S − 1 degrees of freedom at
    level α / tests. None when even `max_seeds` are not enough.
    """
    if not difference > 0 or not seed_sd >= 0:
        raise ValueError(f"expected a positive difference and a non-negative seed_sd, got {difference}, {seed_sd}")

    def detects(n_seeds: int) -> bool:
        standard_error = math.hypot(seed_sd / math.sqrt(n_seeds), question_se)
        return standard_error == 0 or minimum_detectable_difference(
            standard_error, n_seeds - 1, alpha=alpha, power=power, tests=tests) <= difference

    # The detectable difference shrinks with every seed (smaller standard error, more degrees
    # of freedom): double until it is small enough, then bisect.
    low, high = 1, 2
    while not detects(high):
        if high >= max_seeds:
            return None
        low, high = high, min(2 * high, max_seeds)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if detects(middle) else (middle, high)
    return high
