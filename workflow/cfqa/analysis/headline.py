"""The headline numbers: a handful per (method, seed) run, and per method their seed mean with
an interval over seeds.

- `results/{method}/seed{seed}/headline.json` (evaluate): one run's numbers (`headline`).
- `results/headline.json` (report): THE DVC metric of a run root (`run_headline`). Per method
  three numbers with short names, so that `dvc exp show --only-changed` after a change to one
  method fits a 120-column terminal with the changed parameter in view: DVC makes one column
  per key (`lora.cf_em%`), every key of a rerun method changes, and DVC squeezes the
  parameter columns out before the metric columns.

  | key | what |
  |---|---|
  | `cf_em%` | seed mean of test contextual EM (%) on counterfactual contexts: does the model follow the context when it contradicts what it was trained on |
  | `cf_em%±` | half-width of its 95 % t-interval over seeds (n − 1 degrees of freedom), in percentage points; null with one seed |
  | `f_em%` | seed mean of test contextual EM (%) on factual contexts: did it learn the task at all |

  Values are rounded to 0.1 percentage points (finer than any seed spread here). The other
  numbers (the interval of `f_em`, memorization ratios, costs) are in results/summary.json and
  the report; each run's in its own headline.json.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from cfqa.contract import Headline, MethodHeadline, MetricsRecord, TrainRecord

HEADLINE_SET = "test"
CONFIDENCE = 0.95
DECIMALS = 1


def headline(trained: TrainRecord, metrics: MetricsRecord) -> Headline:
    """The run's few numbers: contextual EM per test variant, memorization ratio per set, and
    the training cost train.json measured."""
    return Headline(
        test_contextual_em_pct={variant: scores.get("contextual_em_pct")
                                for variant, scores in metrics.sets[HEADLINE_SET].items()},
        memorization_ratio_pct={name: cell.memorization_ratio_pct for name, cell in metrics.memorization.items()},
        trainable_params=trained.params.trainable,
        peak_memory_bytes=trained.cost.peak_memory_bytes,
        step_time_s=trained.cost.step_time_s,
    )


def seed_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float | None]:
    """(mean, half-width) of a t-interval over per-seed values, n − 1 degrees of freedom:
    seeds are the unit of replication. The half-width is None with one seed (no spread to
    estimate). The one place this file's interval is computed: cfqa.analysis.statistics' seed-level
    interval can replace the body."""
    from scipy import stats     # imported here: scipy costs a second to import

    n = len(values)
    if n == 0:
        raise ValueError("seed_interval: no values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, DECIMALS)


def method_headline(runs: Sequence[Headline]) -> MethodHeadline:
    """The seed means (and the counterfactual EM's interval) of one method's runs. A score
    that some seed lacks (no example of that variant) is left out: a mean over the seeds
    that have it would not be comparable with the other methods'."""
    def scores(variant: str) -> list[float] | None:
        values = [run.test_contextual_em_pct.get(variant) for run in runs]
        return None if any(v is None for v in values) else values

    counterfactual, factual = scores("counterfactual"), scores("factual")
    cf_mean, cf_half = seed_interval(counterfactual) if counterfactual else (None, None)
    f_mean = seed_interval(factual)[0] if factual else None
    return MethodHeadline(cf_em_pct=_rounded(cf_mean), cf_em_half_width_pct=_rounded(cf_half),
                          f_em_pct=_rounded(f_mean))


def run_headline(runs_by_method: Mapping[str, Sequence[Headline]]) -> dict[str, MethodHeadline]:
    """results/headline.json: every method of the run root, in params.yaml's order."""
    empty = [method for method, runs in runs_by_method.items() if not runs]
    if empty:
        raise ValueError(f"no runs of {empty}: every method needs at least one evaluated seed")
    return {method: method_headline(runs) for method, runs in runs_by_method.items()}
