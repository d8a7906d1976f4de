"""Params and metrics as MLflow entities (nested mappings flattened to dotted keys, numbers
only as metrics), written in batches within MLflow's limits."""
from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping, TypeVar

from cfqa.tracking.locking import with_lock_retry

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")

# MLflow's limits per log_batch call (mlflow.utils.validation).
MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_INVALID_KEY_CHARS = re.compile(r"[^\w\-. /]")


def valid_key(name: str) -> str:
    return _INVALID_KEY_CHARS.sub("_", name)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for name, value in mapping.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if isinstance(value, Mapping):
            flat.update(flatten(value, key))
        else:
            flat[valid_key(key)] = value
    return flat


def _metric_value(value: Any) -> float | None:
    """Numbers (bools as 0/1) are metrics; text, lists and None are not."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def param_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def as_metric_entities(metrics: Mapping[str, Any], step_metrics: Iterable[Mapping[str, Any]], now_ms: int,
                       logged: set[tuple[str, int]] = frozenset()) -> list:
    """Final metrics at step 0 and per-step metrics, numbers only, without (key, step) pairs
    already `logged`."""
    from mlflow.entities import Metric

    entities = [Metric(key, value, now_ms, 0) for k, v in flatten(metrics).items()
                if (value := _metric_value(v)) is not None and ((key := _metric_name(k, v)), 0) not in logged]
    for row in step_metrics:
        step = int(row["step"])
        entities += [Metric(valid_key(k), value, now_ms, step) for k, v in row.items()
                     if k != "step" and (value := _metric_value(v)) is not None
                     and (valid_key(k), step) not in logged]
    return entities


def _metric_name(key: str, value: Any) -> str:
    """A yes/no value is logged as 0/1 under a name that says so (`train.lr_selected_flag`):
    `train.lr_selected = 1.0` would read like a learning rate."""
    return f"{key}_flag" if isinstance(value, bool) else key


def log_batches(client: MlflowClient, run_id: str, params: list, metrics: list) -> None:
    for batch in chunks(params, MAX_PARAMS_PER_BATCH):
        with_lock_retry(functools.partial(client.log_batch, run_id, params=batch, synchronous=True), "log params")
    for batch in chunks(metrics, _MAX_METRICS_PER_BATCH):
        with_lock_retry(functools.partial(client.log_batch, run_id, metrics=batch, synchronous=True),
                        "log metrics")


def logged_steps(client: MlflowClient, run_id: str, keys: Iterable[str]) -> set[tuple[str, int]]:
    """(key, step) pairs the run already holds for `keys`."""
    logged: set[tuple[str, int]] = set()
    for key in keys:
        history = with_lock_retry(functools.partial(client.get_metric_history, run_id, key), "read metric history")
        logged |= {(key, metric.step) for metric in history}
    return logged
