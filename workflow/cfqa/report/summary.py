"""results/summary.json: the key numbers of every method, one flat mapping per method, so
that `dvc metrics show/diff` lists them side by side. Keys keep the contract's unit suffixes;
accuracies and memorization ratios are seed means with `_low`/`_high` interval limits, costs
are seed means, `n_seeds` says how many runs stand behind each method."""
from __future__ import annotations

import math
from typing import Sequence

from cfqa.scoring import metrics
from cfqa.contract import Summary
from cfqa.report.aggregate import Aggregates
from cfqa.report.inputs import MethodResults
from cfqa.report.tables import run_mean

# Seed means of metrics.json beside the registry's (cfqa.scoring.metrics) seed-mean metrics.
MEASURED_SCORES = ("target_loss_nats",)


def _usable(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _with_interval(values: dict, key: str, interval) -> None:
    values[key] = interval.estimate
    values[f"{key}_low"] = interval.low
    values[f"{key}_high"] = interval.high


def _same_or_mean(result: MethodResults, value) -> float | int | None:
    """The value when every seed has the same (parameter counts), else the seed mean."""
    values = [value(run) for run in result.runs]
    return values[0] if len(set(values)) == 1 else run_mean(result, value)


def method_summary(result: MethodResults, agg: Aggregates) -> dict[str, float | int]:
    """Keyed by MethodResults.key (`family/method` when several families are reported):
    `{set}_{variant}_{field}` for every metric of the registry (+ `_low`/`_high` for the
    compared ones, contextual and parametric EM) and the target loss, `{set}_memorization_ratio_pct`
    (+ interval), the cost keys and `n_seeds`; absent or non-finite values are left out
    rather than written as null."""
    values: dict[str, float | int | None] = {}
    for set_name in agg.sets:
        for variant in agg.variants[set_name]:
            for metric in metrics.compared_metrics():
                interval = agg.accuracy.get((result.key, set_name, variant, metric.name))
                if interval is not None:
                    _with_interval(values, f"{set_name}_{variant}_{metric.field}", interval)
            for score in (*(m.field for m in metrics.seed_mean_metrics()), *MEASURED_SCORES):
                values[f"{set_name}_{variant}_{score}"] = run_mean(
                    result, lambda run: (run.metrics.sets.get(set_name, {}).get(variant) or {}).get(score))
        cell = agg.memorization.get((result.key, set_name))
        if cell is not None:
            _with_interval(values, f"{set_name}_memorization_ratio_pct", cell.interval)
    mean = lambda value: run_mean(result, value)
    values.update({
        "trainable_params": _same_or_mean(result, lambda run: run.train.params.trainable),
        "trainable_pct": _same_or_mean(result, lambda run: run.train.params.trainable_pct),
        "checkpoint_bytes": _same_or_mean(result, lambda run: run.train.cost.checkpoint_bytes),
        "step_memory_sum_bytes": _same_or_mean(result, lambda run: run.train.cost.step_memory.sum_bytes),
        "peak_memory_bytes": mean(lambda run: run.train.cost.peak_memory_bytes),
        "step_time_s": mean(lambda run: run.train.cost.step_time_s),
        "train_examples_per_s": mean(lambda run: run.train.cost.train_examples_per_s),
        "train_wall_time_s": mean(lambda run: run.train.cost.wall_time_s),
        "max_epoch_time_s": mean(lambda run: run.train.cost.max_epoch_time_s),
        "best_val_loss": mean(lambda run: run.train.best_val_loss),
        "inference_per_example_ms": mean(lambda run: run.metrics.inference.per_example_ms),
        "n_seeds": len(result.runs),
    })
    return {key: value for key, value in values.items() if _usable(value)}


def build_summary(results: Sequence[MethodResults], agg: Aggregates) -> Summary:
    return Summary(methods={r.key: method_summary(r, agg) for r in results})
