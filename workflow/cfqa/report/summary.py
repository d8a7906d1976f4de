"""results/summary.json: the key numbers of every method, one flat mapping per method, so
that `dvc metrics show/diff` lists them side by side. Keys keep the contract's unit suffixes."""
from __future__ import annotations

import math

from cfqa.contract import Summary
from cfqa.report.inputs import MethodResults

SUMMARY_SCORES = ("contextual_em_pct", "contextual_f1_pct", "parametric_em_pct")


def _usable(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def method_summary(result: MethodResults) -> dict[str, float | int]:
    """`{set}_{variant}_{score}`, `{set}_memorization_ratio_pct` and the cost keys; absent or
    non-finite values are left out rather than written as null."""
    values: dict[str, float | int | None] = {}
    for set_name, variants in result.metrics.sets.items():
        for variant, cell in variants.items():
            for score in SUMMARY_SCORES:
                values[f"{set_name}_{variant}_{score}"] = getattr(cell, score)
    for set_name, block in result.metrics.memorization.items():
        values[f"{set_name}_memorization_ratio_pct"] = block.memorization_ratio_pct
    train, cost = result.train, result.train.cost
    values.update({
        "trainable_params": train.params.trainable,
        "trainable_pct": train.params.trainable_pct,
        "checkpoint_bytes": cost.checkpoint_bytes,
        "step_memory_sum_bytes": cost.step_memory.sum_bytes,
        "peak_memory_bytes": cost.peak_memory_bytes,
        "step_time_s": cost.step_time_s,
        "train_examples_per_s": cost.train_examples_per_s,
        "train_wall_time_s": cost.wall_time_s,
        "best_val_loss": train.best_val_loss,
        "inference_per_example_ms": result.metrics.inference.per_example_ms,
    })
    return {key: value for key, value in values.items() if _usable(value)}


def build_summary(results: list[MethodResults]) -> Summary:
    return Summary(methods={r.name: method_summary(r) for r in results})
