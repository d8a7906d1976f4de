"""results/summary.json: the key numbers of every method, one flat mapping per method, so
that `dvc metrics show/diff` lists them side by side."""
from __future__ import annotations

import math
from typing import Any

from cfqa.report.inputs import MethodResults, lookup

SUMMARY_SCORES = ("contextual_em", "contextual_f1", "parametric_em")

# summary key -> where it is in train.json ("train") or metrics.json ("metrics")
SUMMARY_COSTS = {
    "trainable_params": ("train", "params", "trainable"),
    "trainable_percent": ("train", "params", "trainable_percent"),
    "checkpoint_bytes": ("train", "cost", "checkpoint_bytes"),
    "peak_memory_bytes": ("train", "cost", "peak_memory_bytes"),
    "step_time_s": ("train", "cost", "step_time_s"),
    "train_examples_per_s": ("train", "cost", "examples_per_s"),
    "wall_time_s": ("train", "cost", "wall_time_s"),
    "best_val_loss": ("train", "best_val_loss"),
    "inference_ms_per_example": ("metrics", "inference", "ms_per_example"),
}


def _usable(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def method_summary(result: MethodResults) -> dict[str, float | int]:
    """`{set}_{variant}_{score}`, `{set}_memorization_ratio` and the cost keys; absent or
    non-finite values are left out rather than written as null."""
    summary: dict[str, float | int] = {}
    for set_name, variants in (result.metrics.get("sets") or {}).items():
        for variant, cell in (variants or {}).items():
            for score in SUMMARY_SCORES:
                if _usable((cell or {}).get(score)):
                    summary[f"{set_name}_{variant}_{score}"] = cell[score]
    for set_name, block in (result.metrics.get("memorization") or {}).items():
        if _usable((block or {}).get("memorization_ratio")):
            summary[f"{set_name}_memorization_ratio"] = block["memorization_ratio"]
    sources = {"train": result.train, "metrics": result.metrics}
    for key, (source, *path) in SUMMARY_COSTS.items():
        value = lookup(sources[source], *path)
        if _usable(value):
            summary[key] = value
    return summary


def build_summary(results: list[MethodResults]) -> dict[str, dict[str, float | int]]:
    return {r.name: method_summary(r) for r in results}
