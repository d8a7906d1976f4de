"""The report's tables as plain data (headers and already formatted cells), built by pure
functions from loaded results; rendering to Markdown or HTML is elsewhere."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from cfqa.formats import VARIANTS
from cfqa.report import formatting as fmt
from cfqa.contract import VariantScores
from cfqa.report.inputs import MethodResults


@dataclass(frozen=True)
class Table:
    key: str                      # a stable identifier (HTML anchor)
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


def _variants_in(results: list[MethodResults], set_name: str) -> list[str]:
    present = {v for r in results for v in r.metrics.sets.get(set_name, {})}
    return [v for v in VARIANTS if v in present] + sorted(present - set(VARIANTS))


def variant_scores(result: MethodResults, set_name: str, variant: str) -> VariantScores | None:
    return result.metrics.sets.get(set_name, {}).get(variant)


def accuracy_table(results: list[MethodResults], set_name: str) -> Table:
    rows = []
    for r in results:
        for variant in _variants_in(results, set_name):
            cell = variant_scores(r, set_name, variant)
            if cell is None:
                continue
            rows.append((r.name, variant, fmt.count(cell.n),
                         fmt.percent(cell.contextual_em_pct), fmt.percent(cell.contextual_f1_pct),
                         fmt.percent(cell.contextual_lenient_pct),
                         fmt.percent(cell.parametric_em_pct), fmt.percent(cell.parametric_f1_pct),
                         fmt.percent(cell.unanswerable_pct)))
    return Table(
        key=f"accuracy-{set_name}",
        title=f"Accuracy on `{set_name}` by method and context variant",
        headers=("method", "variant", "n", "contextual EM (%)", "contextual F1 (%)",
                 "contextual lenient (%)", "parametric EM (%)", "parametric F1 (%)", "unanswerable (%)"),
        rows=tuple(rows),
        caption="Contextual: the answer the context supports (\"unanswerable\" for empty and "
                "random contexts). Parametric: the original answer to the question. Lenient: EM, "
                "or one answer's tokens contain the other's (\"18 January 1981\" vs \"in 18 "
                "January 1981\").",
    )


def memorization_table(results: list[MethodResults], sets: Iterable[str]) -> Table:
    sets = list(sets)
    headers = ["method"] + [f"M_R {s} (%)" for s in sets]
    for s in sets:
        headers += [f"p_o {s} (%)", f"p_s {s} (%)", f"other {s} (%)", f"n {s}"]
    rows = []
    for r in results:
        blocks = [r.metrics.memorization.get(s) for s in sets]
        row = [r.name] + [fmt.percent(b.memorization_ratio_pct if b else None) for b in blocks]
        for block in blocks:
            row += ([fmt.percent(block.original_pct), fmt.percent(block.substitute_pct),
                     fmt.percent(block.other_pct), fmt.count(block.n)] if block else [fmt.MISSING] * 4)
        rows.append(tuple(row))
    return Table(
        key="memorization",
        title="Memorization on counterfactual contexts",
        headers=tuple(headers),
        rows=tuple(rows),
        caption="On counterfactual contexts, the share of contextual predictions equal to the "
                "original answer (p_o), to the substituted answer (p_s) or to neither (other); "
                "memorization ratio M_R = p_o / (p_o + p_s) (Longpre et al., 2021). All in percent. "
                "Lower M_R means the model follows the context.",
    )


def _answer_types(results: list[MethodResults], set_name: str) -> list[str]:
    types = set()
    for r in results:
        for by_variant in r.metrics.by_type.get(set_name, {}).values():
            types.update(by_variant)
        types.update(r.metrics.most_frequent_em_pct.get(set_name, {}))
    types.discard("all")
    return sorted(types)


def by_type_table(results: list[MethodResults], set_name: str) -> Table:
    variants = _variants_in(results, set_name)
    headers = ["method", "answer type", "n", "most-frequent EM (%)"]
    for variant in variants:
        headers += [f"{variant} contextual EM (%)", f"{variant} parametric EM (%)"]
    rows = []
    for r in results:
        baseline = r.metrics.most_frequent_em_pct.get(set_name, {})
        for answer_type in _answer_types(results, set_name) + ["all"]:
            # The "all" row takes the overall numbers of the set, so it matches the accuracy table.
            cells = {v: (variant_scores(r, set_name, v) if answer_type == "all"
                         else r.metrics.by_type.get(set_name, {}).get(v, {}).get(answer_type))
                     for v in variants}
            n = next((c.n for c in cells.values() if c is not None), None)
            row = [r.name, answer_type, fmt.count(n), fmt.percent(baseline.get(answer_type))]
            for variant in variants:
                cell = cells[variant]
                row += [fmt.percent(cell.contextual_em_pct if cell else None),
                        fmt.percent(cell.parametric_em_pct if cell else None)]
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
        params, cost, inference = r.train.params, r.train.cost, r.metrics.inference
        rows.append((r.name, fmt.count(params.trainable), fmt.share(params.trainable_pct),
                     fmt.count(params.total), fmt.bytes_size(cost.checkpoint_bytes),
                     fmt.bytes_size(cost.step_memory.sum_bytes), fmt.bytes_size(cost.peak_memory_bytes),
                     fmt.seconds(cost.step_time_s), fmt.decimal(cost.train_examples_per_s, 1),
                     fmt.decimal(inference.per_example_ms, 2), fmt.decimal(inference.examples_per_s, 1),
                     fmt.seconds(cost.wall_time_s)))
    return Table(
        key="efficiency",
        title="Cost of each method",
        headers=("method", "trainable params", "trainable %", "total params", "checkpoint",
                 "step memory (sum of parts)", "measured peak memory", "step time",
                 "train examples/s", "inference ms/example", "inference examples/s", "wall time"),
        rows=tuple(rows),
        caption="Checkpoint: the saved trainable weights only. Step time and examples/s: training. "
                "Memory: see the next table.",
    )


MEMORY_PARTS = ("parameters_bytes", "gradients_bytes", "optimizer_state_bytes", "activations_bytes")
MEMORY_GOAL_MEASURE = "sum of parts"


def _ratio_to(value: int | None, reference: int | None) -> str:
    return fmt.decimal(value / reference, 2) if value is not None and reference else fmt.MISSING


def memory_table(results: list[MethodResults]) -> Table:
    full = next((r for r in results if r.train.registry_method == "full"), None)
    full_sum = full.train.cost.step_memory.sum_bytes if full else None
    full_peak = full.train.cost.peak_memory_bytes if full else None
    rows = []
    for r in results:
        parts, cost = r.train.cost.step_memory, r.train.cost
        rows.append((r.name, *(fmt.bytes_size(getattr(parts, name)) for name in MEMORY_PARTS),
                     fmt.bytes_size(parts.sum_bytes), _ratio_to(parts.sum_bytes, full_sum),
                     fmt.bytes_size(cost.peak_memory_bytes), _ratio_to(cost.peak_memory_bytes, full_peak)))
    measures = sorted({r.train.cost.peak_memory_measure for r in results})
    return Table(
        key="memory",
        title="Training memory by part",
        headers=("method", "parameters", "gradients", "optimizer state", "activations",
                 "sum of parts", "sum / full", "measured peak", "peak / full"),
        rows=tuple(rows),
        caption="Sum of parts: what one training step holds that a method changes — weights, "
                "gradients of the trainable weights, optimizer state and activations saved for "
                "backward, counted exactly; deterministic, so it is the measure the memory goal "
                "uses (a method's memory as a ratio to full fine-tuning). Measured peak: "
                + "; ".join(measures or ["not measured"]) + "; it adds backward's transient "
                "buffers and the allocator's slack, and varies a little between runs.",
    )


def _compact(value: Any) -> str:
    return fmt.MISSING if value in (None, {}, []) else json.dumps(value, sort_keys=True, separators=(", ", ": "))


def training_table(results: list[MethodResults]) -> Table:
    rows = []
    for r in results:
        t, config = r.train, r.train.run.params
        rows.append((r.name, fmt.text(t.registry_method), fmt.text(t.backbone), fmt.text(t.seed),
                     fmt.text(t.run.status), fmt.count(t.steps), fmt.count(t.best_step),
                     fmt.decimal(t.best_val_loss, 4), fmt.scalar((config.get("train") or {}).get("lr")),
                     _compact(config.get("options"))))
    return Table(
        key="training",
        title="Training runs",
        headers=("method", "registry method", "backbone", "seed", "status", "steps", "best step",
                 "best val loss", "lr", "options"),
        rows=tuple(rows),
        caption="Prompt tuning trains num_virtual_tokens × d_model embeddings: peft's seq2seq "
                "default keeps twice as many (a decoder copy that gets exactly zero gradient, "
                "since peft prepends only the encoder's), so parameter counts in peft-based papers "
                "can read twice this.",
    )


# Titles for the keys of data/stats.json the counterfactuals stage documents; any other key
# is shown under its own name.
DATA_STAT_TITLES = {
    "counts": "Examples per split and variant",
    "drops": "Examples without a counterfactual, by reason",
    "answer_types": "Answer types per split",
    "partial_mentions": "Answer mentions inside longer names, left unreplaced",
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


# Columns of these statistics measure different things: a row total would mean nothing.
NO_TOTAL = {"partial_mentions"}


def mapping_table(key: str, title: str, value: Any) -> Table:
    """Any JSON value as a table: a mapping of mappings of scalars as a matrix (with a total
    column when every cell is an integer and the key is not in NO_TOTAL), anything else as
    flattened key/value rows."""
    if isinstance(value, dict) and value and all(
            isinstance(inner, dict) and all(_is_scalar(v) for v in inner.values()) for inner in value.values()):
        columns: list[str] = []
        for inner in value.values():
            columns += [c for c in inner if c not in columns]
        with_total = key not in NO_TOTAL and all(isinstance(v, int) and not isinstance(v, bool)
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
