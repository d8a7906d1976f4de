"""Across-seed statistics for comparing fine-tuning methods: intervals, paired tests, Holm.

Every method is trained with several seeds and every trained model answers the same questions,
so results come as seeds × questions arrays. The same seed does not reproduce across machines
(floating-point differences are amplified by training), so one run says little: each number
the report shows is a mean over seeds with an interval that covers both seed variance and the
sampling of questions, and each method is compared with full fine-tuning as a paired
difference on the same questions and seeds.

Design choices (shared by every function below):

* Hierarchical bootstrap: each resample draws seeds with replacement and, independently,
  question indices with replacement, and the SAME question indices are used for every seed.
  Seeds and questions are crossed, not nested: question q is the same item under every seed,
  and a hard question is hard for every seed. Drawing questions separately per seed would
  treat that shared difficulty as independent noise and shrink the interval by up to
  √(n_seeds) on the question component. Joint drawing is Owen's (2007) "pigeonhole"
  bootstrap for crossed designs; it is conservative for cell-level noise (which enters both
  the seed and the question draws), while with few seeds the seed component is under-covered
  (a bootstrap over 3 values cannot know the spread it has not seen). Measured coverage of
  the 95 % interval of the mean, 3 seeds × 250 questions, 300 simulated experiments of a
  logit model with question difficulty SD 2 logits: 97–99 % without seed effects (width
  ~1.5× what cell noise alone needs), 96 % with a seed SD of 2.8 accuracy points, 91 % at
  5.8 points, 82 % at 11 points; with 10 seeds 94 % and 91 % at 5.8 and 11 points. Report
  `seed_sd` beside each interval; when it is large, more seeds are the only remedy.
* Percentile intervals, not BCa: the statistics are means and pooled ratios of many 0/1
  cells, close to symmetric and unbiased; BCa's jackknife acceleration has no single
  leave-one-out unit in a two-factor design and is unstable with 3 seeds; percentile limits
  stay inside the statistic's range (0–100 %) and are transformation-respecting.
* Resamples are drawn as multiplicity weights (how often each seed and question was drawn),
  so a resample's statistic is w_seedᵀ · cells · w_question: one matrix product per block of
  resamples instead of a Python loop.
* Pairing: seed i of method a is paired with seed i of method b, and question j with
  question j; paired resamples apply the same seed and question weights to both methods.
* p-values come from a sign-flip permutation test at the question level: under the null
  the labels a/b of one question are exchangeable, and they are swapped for all seeds of that
  question at once, because a question's differences are correlated across seeds (flipping
  cells independently would make the null distribution too narrow). The test is conditional
  on the trained models: it covers question sampling, not seed variance (with 3 seeds a
  seed-level permutation has only 8 sign patterns, so p could never go below 0.25). A
  difference is therefore called `significant` only when p < 1 − confidence AND the
  hierarchical interval, which does cover seed variance, excludes 0.
* Randomized p-values are (1 + #{|T*| ≥ |T|}) / (1 + permutations) (never 0, valid at any
  number of permutations); when all sign patterns (or set splits) fit in `permutations`
  they are enumerated and the p-value is exact.

Inputs are seeds × questions arrays; everything is pure (no I/O) and reproducible: pass an
int seed or a numpy Generator as `seed`.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_PERMUTATIONS = 2000
# Cells per block of resamples (resamples × questions). Blocks of ~0.5 MB are reused by the
# allocator; one block of all 2,000 × 250 resamples (4 MB per array) was ~5× slower here,
# paying fresh page faults on every call.
_BLOCK_CELLS = 1 << 16
# Ties between permuted and observed statistics are decided with this relative tolerance, so
# that float summation order does not split values that are equal in exact arithmetic.
_TIE_TOLERANCE = 1e-9

SeedLike = int | np.random.Generator | None


@dataclass(frozen=True)
class Interval:
    """A statistic over seeds × questions with its hierarchical bootstrap interval.

    `estimate` is the mean over seeds of the per-seed mean (× scale), or for a ratio the
    pooled memorization ratio in percent. `skipped_resamples` counts resamples where the
    statistic was undefined (ratio with no original and no substitute answer); the interval
    comes from the others. `seed_variance_covered` is False with one seed: the interval then
    covers question sampling only. `seed_sd` is the standard deviation (ddof 1) of the
    per-seed statistics, NaN with one seed: a spread large against the interval's width says
    the seeds, not the questions, dominate the uncertainty (see the module docstring).
    """

    estimate: float
    low: float
    high: float
    n_seeds: int
    n_questions: int
    confidence: float
    resamples: int
    seed_variance_covered: bool
    seed_sd: float
    skipped_resamples: int = 0


@dataclass(frozen=True)
class Difference:
    """a − b with its hierarchical bootstrap interval and a permutation p-value.

    For paired comparisons n_questions_a == n_questions_b. `exact_permutation` is True when
    every sign pattern (or set split) was enumerated. `skipped_permutations` counts permuted
    statistics that were undefined (ratios only) and left out of the p-value. `seed_sd` is
    the standard deviation (ddof 1) of the per-seed differences, NaN with one seed.
    """

    difference: float
    low: float
    high: float
    p_value: float
    significant: bool
    n_seeds: int
    n_questions_a: int
    n_questions_b: int
    confidence: float
    resamples: int
    permutations: int
    exact_permutation: bool
    seed_variance_covered: bool
    seed_sd: float
    skipped_resamples: int = 0
    skipped_permutations: int = 0


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


def _check_options(confidence: float, resamples: int, permutations: int | None = None) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence}")
    if int(resamples) != resamples or resamples < 1:
        raise ValueError(f"resamples: expected a positive integer, got {resamples}")
    if permutations is not None and (int(permutations) != permutations or permutations < 1):
        raise ValueError(f"permutations: expected a positive integer, got {permutations}")


# --------------------------------------------------------------------------- resampling


def _counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """rows × n multiplicities of n draws with replacement from n items (one row per resample)."""
    draws = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
    return np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(float)


def _blocks(total: int, n_questions: int) -> list[int]:
    size = max(1, _BLOCK_CELLS // max(1, n_questions))
    return [min(size, total - start) for start in range(0, total, size)]


def _weighted_sums(seed_weights: np.ndarray, cells: np.ndarray, question_weights: np.ndarray) -> np.ndarray:
    """Per resample: Σ_s Σ_q w_s · cells[s, q] · v_q."""
    return np.einsum("bq,bq->b", seed_weights @ cells, question_weights)


def _seed_sd(per_seed: np.ndarray) -> float:
    defined = per_seed[~np.isnan(per_seed)]
    return float(np.std(defined, ddof=1)) if defined.size > 1 else math.nan


def _percentile(values: np.ndarray, confidence: float) -> tuple[float, float]:
    if values.size == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _ratio(original: np.ndarray, substitute: np.ndarray) -> np.ndarray:
    """100 · o / (o + s) elementwise; NaN where o + s = 0."""
    total = original + substitute
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 100.0 * original / np.where(total > 0, total, 1.0), np.nan)


def _bootstrap(rng: np.random.Generator, resamples: int, n_seeds: int, question_sets: list[int],
               statistic) -> np.ndarray:
    """Statistic per resample; `statistic(seed_weights, [question_weights per set])`.

    Seed weights are shared by every question set (the same seeds answered every set);
    each set gets its own question weights.
    """
    out = []
    for block in _blocks(resamples, max(question_sets)):
        seed_weights = _counts(rng, block, n_seeds)
        question_weights = [_counts(rng, block, n) for n in question_sets]
        out.append(statistic(seed_weights, question_weights))
    return np.concatenate(out)


# --------------------------------------------------------------------------- permutation


def _sign_patterns(rng: np.random.Generator, permutations: int, n_questions: int):
    """Blocks of {0, 1} swap masks (questions whose labels are swapped) and whether exact."""
    if n_questions < 63 and 2 ** n_questions <= permutations:
        patterns = ((np.arange(2 ** n_questions)[:, None] >> np.arange(n_questions)) & 1).astype(float)
        return [patterns], True
    # One random bit per question, drawn as packed bytes (8× fewer draws than integers(0, 2)).
    bytes_per_row = (n_questions + 7) // 8
    return [np.unpackbits(rng.integers(0, 256, size=(block, bytes_per_row), dtype=np.uint8),
                          axis=1, count=n_questions).astype(float)
            for block in _blocks(permutations, n_questions)], False


def _split_patterns(rng: np.random.Generator, permutations: int, n_a: int, n_b: int):
    """Blocks of {0, 1} masks over the pooled n_a + n_b questions, 1 = assigned to set a."""
    n = n_a + n_b
    if math.comb(n, n_a) <= permutations:
        masks = np.zeros((math.comb(n, n_a), n))
        for row, chosen in enumerate(itertools.combinations(range(n), n_a)):
            masks[row, list(chosen)] = 1.0
        return [masks], True
    blocks = []
    for block in _blocks(permutations, n):
        base = np.zeros((block, n))
        base[:, :n_a] = 1.0
        blocks.append(rng.permuted(base, axis=1))
    return blocks, False


def _p_value(null: np.ndarray, observed: float, exact: bool, scale: float) -> float:
    threshold = abs(observed) - _TIE_TOLERANCE * max(scale, abs(observed))
    extreme = int(np.count_nonzero(np.abs(null) >= threshold))
    if exact:
        return extreme / null.size
    return (extreme + 1) / (null.size + 1)


def _difference(difference: float, interval: tuple[float, float], null: np.ndarray, exact: bool,
                scale: float, *, per_seed: np.ndarray, n_seeds: int, n_a: int, n_b: int, confidence: float, resamples: int,
                permutations: int, skipped_resamples: int, skipped_permutations: int) -> Difference:
    low, high = interval
    if math.isnan(difference) or null.size == 0:
        p_value = math.nan
    else:
        p_value = _p_value(null, difference, exact, scale)
    excludes_zero = not math.isnan(low) and (low > 0 or high < 0)
    significant = bool(not math.isnan(p_value) and p_value < 1 - confidence and excludes_zero)
    return Difference(difference=difference, low=low, high=high, p_value=p_value,
                      significant=significant, n_seeds=n_seeds, n_questions_a=n_a,
                      n_questions_b=n_b, confidence=confidence, resamples=int(resamples),
                      permutations=int(null.size), exact_permutation=exact,
                      seed_variance_covered=n_seeds > 1, seed_sd=_seed_sd(per_seed),
                      skipped_resamples=skipped_resamples,
                      skipped_permutations=skipped_permutations)


# --------------------------------------------------------------------------- means


def mean_interval(scores, *, confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                  seed: SeedLike = 0, scale: float = 100.0) -> Interval:
    """Mean over seeds of the per-seed mean of `scores` (seeds × questions), × `scale`.

    Per-question values are 0/1 correctness or floats (e.g. token F1) in [0, 1]; the default
    scale reports percent. The interval is the hierarchical percentile bootstrap described in
    the module docstring; with one seed it resamples questions only
    (`seed_variance_covered=False`).
    """
    _check_options(confidence, resamples)
    values = _scores(scores, "scores")
    n_seeds, n_questions = values.shape
    rng = np.random.default_rng(seed)
    # Every resample has n_seeds · n_questions cells, so the weighted sum over that is the
    # mean over seeds of per-seed means.
    cells = values * (scale / (n_seeds * n_questions))
    boot = _bootstrap(rng, resamples, n_seeds, [n_questions],
                      lambda ws, wq: _weighted_sums(ws, cells, wq[0]))
    low, high = _percentile(boot, confidence)
    return Interval(estimate=float(values.mean() * scale), low=low, high=high, n_seeds=n_seeds,
                    n_questions=n_questions, confidence=confidence, resamples=int(resamples),
                    seed_variance_covered=n_seeds > 1, seed_sd=_seed_sd(values.mean(axis=1) * scale))


def paired_difference(a, b, *, confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                      permutations: int = DEFAULT_PERMUTATIONS, seed: SeedLike = 0,
                      scale: float = 100.0) -> Difference:
    """Mean of a − b (× scale) for two methods' seeds × questions arrays on the same questions.

    Seed i of `a` is paired with seed i of `b`, question j with question j. The interval is
    the hierarchical bootstrap of the per-cell differences; the p-value is the two-sided
    sign-flip test on per-question differences averaged over seeds.
    """
    _check_options(confidence, resamples, permutations)
    first, second = _scores(a, "a"), _scores(b, "b")
    _same_shape(first, second, "paired_difference")
    n_seeds, n_questions = first.shape
    rng = np.random.default_rng(seed)
    cells = (first - second) * (scale / (n_seeds * n_questions))
    boot = _bootstrap(rng, resamples, n_seeds, [n_questions],
                      lambda ws, wq: _weighted_sums(ws, cells, wq[0]))
    per_question = cells.sum(axis=0)              # each question's share of the mean difference
    observed = float(per_question.sum())
    blocks, exact = _sign_patterns(rng, permutations, n_questions)
    # Swapping a question's labels flips its sign: T* = Σ_q (1 − 2 m_q) d_q.
    null = np.concatenate([(1.0 - 2.0 * mask) @ per_question for mask in blocks])
    return _difference(observed, _percentile(boot, confidence), null, exact,
                       float(np.abs(per_question).sum()),
                       per_seed=(first - second).mean(axis=1) * scale, n_seeds=n_seeds, n_a=n_questions,
                       n_b=n_questions, confidence=confidence, resamples=resamples,
                       permutations=permutations, skipped_resamples=0, skipped_permutations=0)


# --------------------------------------------------------------------------- memorization ratio


def ratio_interval(is_original, is_substitute, *, confidence: float = 0.95,
                   resamples: int = DEFAULT_RESAMPLES, seed: SeedLike = 0) -> Interval:
    """Memorization ratio M_R = 100 · Σ original / (Σ original + Σ substitute), pooled over cells.

    `is_original` and `is_substitute` are seeds × questions 0/1 arrays (a cell is at most
    one of them; "other" answers are 0 in both). Resamples with no original and no substitute
    answer are skipped and counted; an undefined estimate gives NaN throughout.
    """
    _check_options(confidence, resamples)
    original, substitute = _classes(is_original, is_substitute, "ratio_interval")
    n_seeds, n_questions = original.shape
    rng = np.random.default_rng(seed)
    boot = _bootstrap(rng, resamples, n_seeds, [n_questions],
                      lambda ws, wq: _ratio(_weighted_sums(ws, original, wq[0]),
                                            _weighted_sums(ws, substitute, wq[0])))
    defined = boot[~np.isnan(boot)]
    low, high = _percentile(defined, confidence)
    estimate = float(_ratio(original.sum(), substitute.sum()))
    return Interval(estimate=estimate, low=low, high=high, n_seeds=n_seeds,
                    n_questions=n_questions, confidence=confidence, resamples=int(resamples),
                    seed_variance_covered=n_seeds > 1,
                    seed_sd=_seed_sd(_ratio(original.sum(axis=1), substitute.sum(axis=1))),
                    skipped_resamples=int(boot.size - defined.size))


def paired_ratio_difference(is_original_a, is_substitute_a, is_original_b, is_substitute_b, *,
                            confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                            permutations: int = DEFAULT_PERMUTATIONS,
                            seed: SeedLike = 0) -> Difference:
    """M_R(a) − M_R(b) in percentage points, two methods on the same seeds × questions.

    Paired like `paired_difference`: each bootstrap resample applies the same seed and
    question draws to both methods; the permutation swaps the a/b labels of a question for
    all its seeds at once.
    """
    _check_options(confidence, resamples, permutations)
    orig_a, subst_a = _classes(is_original_a, is_substitute_a, "a")
    orig_b, subst_b = _classes(is_original_b, is_substitute_b, "b")
    _same_shape(orig_a, orig_b, "paired_ratio_difference")
    n_seeds, n_questions = orig_a.shape
    rng = np.random.default_rng(seed)

    def statistic(ws, wq):
        first = _ratio(_weighted_sums(ws, orig_a, wq[0]), _weighted_sums(ws, subst_a, wq[0]))
        second = _ratio(_weighted_sums(ws, orig_b, wq[0]), _weighted_sums(ws, subst_b, wq[0]))
        return first - second

    boot = _bootstrap(rng, resamples, n_seeds, [n_questions], statistic)
    # Per-question totals over seeds; swapping question q moves its counts between a and b.
    oa, sa, ob, sb = (x.sum(axis=0) for x in (orig_a, subst_a, orig_b, subst_b))
    blocks, exact = _sign_patterns(rng, permutations, n_questions)
    null = np.concatenate([
        _ratio(oa.sum() + mask @ (ob - oa), sa.sum() + mask @ (sb - sa))
        - _ratio(ob.sum() + mask @ (oa - ob), sb.sum() + mask @ (sa - sb))
        for mask in blocks])
    return _ratio_difference((orig_a, subst_a, orig_b, subst_b), boot, null, exact, confidence=confidence,
                             resamples=resamples, permutations=permutations)


def unpaired_ratio_difference(is_original_a, is_substitute_a, is_original_b, is_substitute_b, *,
                              confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                              permutations: int = DEFAULT_PERMUTATIONS,
                              seed: SeedLike = 0) -> Difference:
    """M_R(a) − M_R(b) for two different question sets answered by the same seeds.

    E.g. the `seen` vs the `test` set: a is seeds × n_a, b is seeds × n_b, and row i of both
    is the same trained model. Each bootstrap resample draws one set of seed indices for
    both sides (the same models answered both sets) and question indices independently per
    side. The p-value comes from a permutation test of set membership: the pooled questions
    are split at random into sets of n_a and n_b (all seeds of a question move together).
    """
    _check_options(confidence, resamples, permutations)
    orig_a, subst_a = _classes(is_original_a, is_substitute_a, "a")
    orig_b, subst_b = _classes(is_original_b, is_substitute_b, "b")
    if orig_a.shape[0] != orig_b.shape[0]:
        raise ValueError(f"unpaired_ratio_difference: a has {orig_a.shape[0]} seeds but b has "
                         f"{orig_b.shape[0]}; expected the same seeds (row i = the same trained model)")
    n_seeds, n_a = orig_a.shape
    n_b = orig_b.shape[1]
    rng = np.random.default_rng(seed)

    def statistic(ws, wq):
        first = _ratio(_weighted_sums(ws, orig_a, wq[0]), _weighted_sums(ws, subst_a, wq[0]))
        second = _ratio(_weighted_sums(ws, orig_b, wq[1]), _weighted_sums(ws, subst_b, wq[1]))
        return first - second

    boot = _bootstrap(rng, resamples, n_seeds, [n_a, n_b], statistic)
    pooled_original = np.concatenate([orig_a.sum(axis=0), orig_b.sum(axis=0)])
    pooled_substitute = np.concatenate([subst_a.sum(axis=0), subst_b.sum(axis=0)])
    blocks, exact = _split_patterns(rng, permutations, n_a, n_b)
    null = np.concatenate([
        _ratio(mask @ pooled_original, mask @ pooled_substitute)
        - _ratio((1 - mask) @ pooled_original, (1 - mask) @ pooled_substitute)
        for mask in blocks])
    return _ratio_difference((orig_a, subst_a, orig_b, subst_b), boot, null, exact, confidence=confidence,
                             resamples=resamples, permutations=permutations)


def _ratio_difference(classes, boot: np.ndarray, null: np.ndarray, exact: bool, *, confidence: float,
                      resamples: int, permutations: int) -> Difference:
    """The Difference of M_R(a) − M_R(b) from its bootstrap and permutation draws; draws where a
    ratio is undefined (no original and no substitute answer) are left out and counted."""
    orig_a, subst_a, orig_b, subst_b = classes
    defined, kept = boot[~np.isnan(boot)], null[~np.isnan(null)]
    observed = float(_ratio(orig_a.sum(), subst_a.sum()) - _ratio(orig_b.sum(), subst_b.sum()))
    per_seed = (_ratio(orig_a.sum(axis=1), subst_a.sum(axis=1))
                - _ratio(orig_b.sum(axis=1), subst_b.sum(axis=1)))
    return _difference(observed, _percentile(defined, confidence), kept, exact, 100.0,
                       per_seed=per_seed, n_seeds=orig_a.shape[0], n_a=orig_a.shape[1], n_b=orig_b.shape[1],
                       confidence=confidence, resamples=resamples, permutations=permutations,
                       skipped_resamples=int(boot.size - defined.size),
                       skipped_permutations=int(null.size - kept.size))


# --------------------------------------------------------------------------- multiplicity


def holm_adjust(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending, p_(i) is multiplied by (m − i + 1), capped at 1, and made monotone with a
    running maximum; rejecting where the adjusted p < α controls the family-wise error rate
    at α under any dependence between the tests.

    The report should use it for each family of comparisons against full fine-tuning (all
    methods vs full for one set, context variant and metric): those comparisons share the
    full fine-tuning runs, so they are dependent, which Holm allows and Benjamini–Hochberg
    (`scipy.stats.false_discovery_control`) only partly does, and the headline claim "method X
    differs from full fine-tuning" is a per-method claim where one false call matters. Holm
    is uniformly more powerful than plain Bonferroni at the same guarantee.
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
