"""The report's tables as plain data (headers and already formatted cells), built by pure
functions from loaded results; rendering to Markdown or HTML is elsewhere."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from cfqa.formats import VARIANTS
from cfqa.report import formatting as fmt
from cfqa.report.inputs import MethodResults, lookup


@dataclass(frozen=True)
class Table:
    key: str                      # a stable identifier (HTML anchor)
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


def _variants_in(results: list[MethodResults], set_name: str) -> list[str]:
    present = {v for r in results for v in (lookup(r.metrics, "sets", set_name) or {})}
    return [v for v in VARIANTS if v in present] + sorted(present - set(VARIANTS))


def accuracy_table(results: list[MethodResults], set_name: str) -> Table:
    rows = []
    for r in results:
        for variant in _variants_in(results, set_name):
            cell = lookup(r.metrics, "sets", set_name, variant)
            if cell is None:
                continue
            rows.append((r.name, variant, fmt.count(cell.get("n")),
                         fmt.percent(cell.get("contextual_em")), fmt.percent(cell.get("contextual_f1")),
                         fmt.percent(cell.get("parametric_em")), fmt.percent(cell.get("parametric_f1")),
                         fmt.percent(cell.get("unanswerable_rate"))))
    return Table(
        key=f"accuracy-{set_name}",
        title=f"Accuracy on `{set_name}` by method and context variant",
        headers=("method", "variant", "n", "contextual EM", "contextual F1", "parametric EM",
                 "parametric F1", "unanswerable %"),
        rows=tuple(rows),
        caption="Contextual: the answer the context supports (\"unanswerable\" for empty and "
                "random contexts). Parametric: the original answer to the question. EM and F1 "
                "in percent.",
    )


def memorization_table(results: list[MethodResults], sets: Iterable[str]) -> Table:
    sets = list(sets)
    headers = ["method"] + [f"M_R {s}" for s in sets]
    for s in sets:
        headers += [f"p_o {s}", f"p_s {s}", f"other {s}"]
    rows = []
    for r in results:
        row = [r.name] + [fmt.ratio(lookup(r.metrics, "memorization", s, "memorization_ratio")) for s in sets]
        for s in sets:
            block = lookup(r.metrics, "memorization", s) or {}
            row += [fmt.percent(block.get("original")), fmt.percent(block.get("substitute")),
                    fmt.percent(block.get("other"))]
        rows.append(tuple(row))
    return Table(
        key="memorization",
        title="Memorization on counterfactual contexts",
        headers=tuple(headers),
        rows=tuple(rows),
        caption="On counterfactual contexts, the share of contextual predictions equal to the "
                "original answer (p_o), to the substituted answer (p_s) or to neither (other), "
                "in percent; memorization ratio M_R = p_o / (p_o + p_s) (Longpre et al., 2021). "
                "Lower M_R means the model follows the context.",
    )


def _answer_types(results: list[MethodResults], set_name: str) -> list[str]:
    types = set()
    for r in results:
        for by_variant in (lookup(r.metrics, "by_type", set_name) or {}).values():
            types.update(by_variant or {})
        types.update(lookup(r.metrics, "baseline", "most_frequent_answer", set_name) or {})
    types.discard("all")
    return sorted(types)


def by_type_table(results: list[MethodResults], set_name: str) -> Table:
    variants = _variants_in(results, set_name)
    headers = ["method", "answer type", "n", "most-frequent EM"]
    for variant in variants:
        headers += [f"{variant} contextual EM", f"{variant} parametric EM"]
    rows = []
    for r in results:
        baseline = lookup(r.metrics, "baseline", "most_frequent_answer", set_name) or {}
        for answer_type in _answer_types(results, set_name) + ["all"]:
            # The "all" row takes the overall numbers of the set, so it matches the accuracy table.
            cells = {v: (lookup(r.metrics, "sets", set_name, v) if answer_type == "all"
                         else lookup(r.metrics, "by_type", set_name, v, answer_type)) or {}
                     for v in variants}
            n = next((c["n"] for c in cells.values() if c.get("n") is not None), None)
            row = [r.name, answer_type, fmt.count(n), fmt.percent(baseline.get(answer_type))]
            for variant in variants:
                row += [fmt.percent(cells[variant].get("contextual_em")),
                        fmt.percent(cells[variant].get("parametric_em"))]
            rows.append(tuple(row))
    return Table(
        key=f"by-type-{set_name}",
        title=f"Accuracy on `{set_name}` by answer type",
        headers=tuple(headers),
        rows=tuple(rows),
        caption="Most-frequent EM: exact match of always answering the most frequent training "
                "answer of that type, the floor a model without knowledge or reading reaches.",
    )


def efficiency_table(results: list[MethodResults]) -> Table:
    rows = []
    for r in results:
        params, cost = r.train.get("params") or {}, r.train.get("cost") or {}
        inference = r.metrics.get("inference") or {}
        rows.append((r.name, fmt.count(params.get("trainable")), fmt.share(params.get("trainable_percent")),
                     fmt.count(params.get("total")), fmt.bytes_size(cost.get("checkpoint_bytes")),
                     fmt.bytes_size(cost.get("peak_memory_bytes")), fmt.seconds(cost.get("step_time_s")),
                     fmt.decimal(cost.get("examples_per_s"), 1), fmt.decimal(inference.get("ms_per_example"), 2),
                     fmt.decimal(inference.get("examples_per_s"), 1), fmt.seconds(cost.get("wall_time_s"))))
    measures = sorted({str(r.train["cost"]["memory_measure"]) for r in results
                       if lookup(r.train, "cost", "memory_measure")})
    caption = "Checkpoint: the saved trainable weights only. Step time and examples/s: training."
    if measures:
        caption += " Peak memory: " + "; ".join(measures) + "."
    return Table(
        key="efficiency",
        title="Cost of each method",
        headers=("method", "trainable params", "trainable %", "total params", "checkpoint",
                 "peak memory", "step time", "train examples/s", "inference ms/example",
                 "inference examples/s", "wall time"),
        rows=tuple(rows),
        caption=caption,
    )


MEMORY_PARTS = ("parameters", "gradients", "optimizer_state", "activations")


def memory_table(results: list[MethodResults]) -> Table:
    rows = []
    for r in results:
        breakdown = lookup(r.train, "cost", "memory_breakdown") or {}
        parts = [breakdown.get(part) for part in MEMORY_PARTS]
        known = [p for p in parts if isinstance(p, (int, float))]
        rows.append((r.name, *(fmt.bytes_size(p) for p in parts),
                     fmt.bytes_size(sum(known) if known else None),
                     fmt.bytes_size(lookup(r.train, "cost", "peak_memory_bytes"))))
    return Table(
        key="memory",
        title="Training memory by part",
        headers=("method", "parameters", "gradients", "optimizer state", "activations", "sum", "peak"),
        rows=tuple(rows),
        caption="What a method changes: weights, gradients of the trainable weights, optimizer "
                "state and activations saved for backward.",
    )


def _compact(value: Any) -> str:
    return fmt.MISSING if value in (None, {}, []) else json.dumps(value, sort_keys=True, separators=(", ", ": "))


def training_table(results: list[MethodResults]) -> Table:
    rows = []
    for r in results:
        t = r.train
        rows.append((r.name, fmt.text(t.get("registry_method")), fmt.text(t.get("backbone")),
                     fmt.text(t.get("seed")), fmt.count(t.get("steps")), fmt.count(t.get("best_step")),
                     fmt.decimal(t.get("best_val_loss"), 4), fmt.flag(t.get("stopped_early")),
                     fmt.scalar(lookup(t, "train_config", "lr")), _compact(t.get("options"))))
    return Table(
        key="training",
        title="Training runs",
        headers=("method", "registry method", "backbone", "seed", "steps", "best step",
                 "best val loss", "stopped early", "lr", "options"),
        rows=tuple(rows),
    )


# Titles for the keys of data/stats.json the counterfactuals stage documents; any other key
# is shown under its own name.
DATA_STAT_TITLES = {
    "counts": "Examples per split and variant",
    "drop_reasons": "Examples without a counterfactual, by reason",
    "answer_types": "Answer types per split",
}


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        items = []
        for key, inner in value.items():
            items += _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return items
    return [(prefix, value if _is_scalar(value) else json.dumps(value))]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def mapping_table(key: str, title: str, value: Any) -> Table:
    """Any JSON value as a table: a mapping of mappings of scalars as a matrix (with a total
    column when every cell is an integer), anything else as flattened key/value rows."""
    if isinstance(value, dict) and value and all(
            isinstance(inner, dict) and all(_is_scalar(v) for v in inner.values()) for inner in value.values()):
        columns: list[str] = []
        for inner in value.values():
            columns += [c for c in inner if c not in columns]
        with_total = all(isinstance(v, int) and not isinstance(v, bool)
                         for inner in value.values() for v in inner.values())
        rows = []
        for row_key, inner in value.items():
            cells = [fmt.scalar(inner.get(c)) for c in columns]
            if with_total:
                cells.append(fmt.count(sum(inner.values())))
            rows.append((str(row_key), *cells))
        headers = ("", *columns, *(("total",) if with_total else ()))
        return Table(key=f"data-{_slug(key)}", title=title, headers=headers, rows=tuple(rows))
    rows = tuple((name or key, fmt.scalar(v)) for name, v in _flatten(value))
    return Table(key=f"data-{_slug(key)}", title=title, headers=("", "value"), rows=rows)


def data_tables(stats: dict[str, Any]) -> list[Table]:
    ordered = [k for k in DATA_STAT_TITLES if k in stats] + [k for k in stats if k not in DATA_STAT_TITLES]
    scalars = {k: stats[k] for k in ordered if _is_scalar(stats[k])}
    tables = [mapping_table(k, DATA_STAT_TITLES.get(k, k.replace("_", " ").capitalize()), stats[k])
              for k in ordered if k not in scalars]
    if scalars:
        tables.append(mapping_table("other", "Other data statistics", scalars))
    return tables
