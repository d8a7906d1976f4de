"""The report's tables as plain data (headers and already formatted cells), built by pure
functions from loaded results and their aggregates (cfqa.report.aggregate); rendering to
Markdown or HTML is elsewhere. Accuracies are seed means with 95 % t intervals over seeds;
comparisons with full fine-tuning are paired differences decided by Holm over each table's
declared family, each interval at the level of its Holm step.

When the results hold several model families (MethodResults.family set), every per-method
table starts with a family column and its rows run by family, then method; the paired
comparisons stay within a family (each family's methods minus that family's full fine-tuning).
With one family the column is left out: the default report stays as it was."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from cfqa.analysis import statistics
from cfqa.scoring import metrics
from cfqa.report import formatting as fmt
from cfqa.report.aggregate import (CONFIDENCE, CONVERGED_WELL_FORMED_PCT, TYPE_COMPARISON_VARIANT, TYPE_VARIANTS,
                                   Aggregates, Comparison, compared_metrics, metric_title)
from cfqa.report.inputs import MethodResults, RunResults
from cfqa.report.mixtures import EFFECT_SET, MixtureGroup

NOT_SIGNIFICANT = "n.s."


@dataclass(frozen=True)
class Table:
    key: str                      # a stable identifier (HTML anchor)
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


def seed_mean(values: Sequence[Any]) -> float | None:
    """Mean over the seeds that have a finite value; None when none has."""
    present = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v)]
    return float(np.mean(present)) if present else None


def run_mean(result: MethodResults, value: Callable[[RunResults], Any]) -> float | None:
    return seed_mean([value(run) for run in result.runs])


def families_shown(results: Sequence[MethodResults]) -> bool:
    return any(r.family is not None for r in results)


def method_headers(results: Sequence[MethodResults]) -> tuple[str, ...]:
    """The leading columns that name a method: its family too when several are reported."""
    return ("family", "method") if families_shown(results) else ("method",)


def method_cells(r: MethodResults) -> tuple[str, ...]:
    return (r.name,) if r.family is None else (r.family, r.name)


def _cell(interval) -> str:
    return fmt.MISSING if interval is None else fmt.interval(interval.estimate, interval.low, interval.high)


def direction_mark(difference, significant: bool) -> str:
    """'higher' / 'lower' only where a difference is significant after Holm, else 'n.s.'."""
    if not significant:
        return NOT_SIGNIFICANT
    return "higher" if difference.difference > 0 else "lower"


def significance_mark(comparison: Comparison) -> str:
    if comparison.difference is None:
        return comparison.excluded or fmt.MISSING
    return direction_mark(comparison.difference, comparison.significant)


MEAN_INTERVAL = ("95 % t interval over seeds (S − 1 degrees of freedom; its standard error adds the sampling "
                 "of questions to the spread of the per-seed values; none with one seed)")


def family_note(decisions, what: str) -> str:
    """The caption sentence that declares a table's Holm family."""
    size = next((d.family_size for d in decisions if d is not None), 0)
    return (f"One declared family: {what} ({size} comparison{'s' if size != 1 else ''} with a spread), Holm at 5 %; "
            "each interval is at the level of its Holm step (95 % up to 1 − 0.05 / family size), so it "
            "excludes 0 exactly where the difference is marked higher or lower.")


def _comparison_cells(comparison: Comparison | None) -> tuple[str, str, str]:
    if comparison is None:
        return fmt.MISSING, fmt.MISSING, fmt.MISSING
    d = comparison.difference
    if d is None:
        return fmt.MISSING, fmt.MISSING, significance_mark(comparison)
    return (fmt.signed_interval(d.difference, d.low, d.high), fmt.p_value(comparison.holm_p),
            significance_mark(comparison))


def _variant_cell(result: MethodResults, set_name: str, variant: str, field: str) -> float | None:
    return run_mean(result, lambda run: (run.metrics.sets.get(set_name, {}).get(variant) or {}).get(field))


def metric_header(metric: metrics.Metric) -> str:
    return f"{metric.label} (%)" if metric.percent else metric.label


def _metric_mean(metric: metrics.Metric, value: float | None) -> str:
    return fmt.percent(value) if metric.percent else fmt.decimal(value, 3)


def _joined(labels: Sequence[str]) -> str:
    """"a, b and c", capitalized: the start of a caption sentence."""
    text = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
    return text[:1].upper() + text[1:]


def accuracy_table(results: Sequence[MethodResults], agg: Aggregates, set_name: str) -> Table:
    """Every metric of the registry (cfqa.scoring.metrics): the compared ones with intervals over seeds
    and questions (the first with its seed SD), the others as seed means of metrics.json."""
    compared = [metrics.metric(name) for name in compared_metrics()]
    primary, others = compared[0], compared[1:]
    seed_means = metrics.seed_mean_metrics()
    rows = []
    for r in results:
        for variant in agg.variants.get(set_name, ()):
            first = agg.accuracy.get((r.key, set_name, variant, primary.name))
            if first is None:
                continue
            rows.append((*method_cells(r), variant, fmt.count(first.n_questions), fmt.count(first.n_seeds),
                         _cell(first), fmt.percent(first.seed_sd),
                         *(_cell(agg.accuracy.get((r.key, set_name, variant, m.name))) for m in others),
                         *(_metric_mean(m, _variant_cell(r, set_name, variant, m.field)) for m in seed_means),
                         fmt.decimal(_variant_cell(r, set_name, variant, "target_loss_nats"), 3)))
    descriptions = " ".join(m.description for m in (*compared, *seed_means) if m.description)
    return Table(
        key=f"accuracy-{set_name}",
        title=f"Accuracy on `{set_name}` by method and context variant",
        headers=(*method_headers(results), "variant", "questions", "seeds", metric_header(primary), "seed SD (pp)",
                 *(metric_header(m) for m in others), *(metric_header(m) for m in seed_means),
                 "target loss (nats/token)"),
        rows=tuple(rows),
        caption=f"{_joined([m.label for m in compared])}: mean over seeds with its {MEAN_INTERVAL}. Seed "
                f"SD: standard deviation of the per-seed {primary.label}. "
                + (f"{_joined([m.label for m in seed_means])}: seed means. " if seed_means else "")
                + descriptions + " Target loss: the trained model's mean "
                "cross-entropy per target token, teacher-forced on the target it was trained to "
                "generate (as the validation loss of training), seed mean.",
    )


def reference_label(results: Sequence[MethodResults], agg: Aggregates) -> str:
    """`full`, or with several families `full` of the same family (each family's own run)."""
    if not families_shown(results):
        return f"`{agg.reference}`"
    names = sorted({r.name for r in results if r.key in agg.references.values()})
    return (" / ".join(f"`{n}`" for n in names) or "full fine-tuning") + " of the same family"


def compared(results: Sequence[MethodResults], agg: Aggregates) -> list[MethodResults]:
    """The methods with a reference of their family to be compared with."""
    return [r for r in results if agg.reference_of(r.key) is not None]


def comparison_table(results: Sequence[MethodResults], agg: Aggregates, set_name: str) -> Table:
    rows = []
    for r in compared(results, agg):
        for variant in agg.variants.get(set_name, ()):
            cells = []
            seeds = fmt.MISSING
            for metric in compared_metrics():
                comparison = agg.comparison(r.key, set_name, variant, metric)
                cells += _comparison_cells(comparison)
                if comparison is not None and comparison.difference is not None:
                    seeds = fmt.count(comparison.difference.n_seeds)
            rows.append((*method_cells(r), variant, seeds, *cells))
    reference = reference_label(results, agg)
    headers = [*method_headers(results), "variant", "seeds"]
    for metric in compared_metrics():
        title = metric_title(metric)
        headers += [f"Δ {title} (pp)", f"{title} Holm p", f"{title} vs {reference}"]
    decisions = [c.decision for c in agg.comparisons if c.set == set_name]
    return Table(
        key=f"comparison-{set_name}",
        title=f"Each method minus {reference} on `{set_name}` (paired by seed and question)",
        headers=tuple(headers),
        rows=tuple(rows),
        caption="Descriptive (the primary endpoint's table is the one claim). Δ: mean paired difference in "
                "percentage points (seed i with seed i, question j with question j) with its t interval on "
                "S − 1 degrees of freedom. Holm p: the paired t-test's p-value adjusted by Holm. "
                + family_note(decisions, "every method, variant and metric of this table") +
                f" {NOT_SIGNIFICANT}: not significant, those methods are not ranked against each other. Methods "
                "that did not converge are not compared."
                + (" Each model family's methods are compared with its own full fine-tuning; the Holm family "
                   "spans the model families of this table." if families_shown(results) else ""),
    )


def memorization_table(results: Sequence[MethodResults], agg: Aggregates) -> Table:
    sets = [s for s in agg.sets if any((r.key, s) in agg.memorization for r in results)]
    headers = [*method_headers(results), "seeds"]
    for s in sets:
        headers += [f"M_R {s}, all (%)", f"M_R {s}, known (%)"]
    with_difference = "seen" in sets and "test" in sets
    if with_difference:
        headers += ["M_R seen − test, all (pp)", "seen − test Holm p"]
    for s in sets:
        headers += [f"p_o {s} (%)", f"p_s {s} (%)", f"other {s} (%)", f"questions {s}", f"known {s} (%)"]
    rows = []
    for r in results:
        cells = [agg.memorization.get((r.key, s)) for s in sets]
        row = [*method_cells(r), fmt.count(len(r.runs))]
        for c in cells:
            row += [_cell(c.interval if c else None), _cell(c.known if c else None)]
        if with_difference:
            decision = agg.seen_minus_test.get(r.key)
            d = decision.difference if decision else None
            row += ([fmt.signed_interval(d.difference, d.low, d.high), fmt.p_value(decision.holm_p)]
                    if d else [fmt.MISSING] * 2)
        for c in cells:
            row += ([fmt.percent(100 * c.original / c.cells), fmt.percent(100 * c.substitute / c.cells),
                     fmt.percent(100 * c.other / c.cells), fmt.count(c.interval.n_questions),
                     fmt.percent(100 * c.known_cells / c.cells if c.known is not None else None)]
                    if c and c.cells else [fmt.MISSING] * 5)
        rows.append(tuple(row))
    decisions = list(agg.seen_minus_test.values())
    return Table(
        key="memorization",
        title="Memorization on counterfactual contexts",
        headers=tuple(headers),
        rows=tuple(rows),
        caption="On counterfactual contexts, the share of contextual predictions equal to the "
                "original answer (p_o), to the substituted answer (p_s) or to neither (other), pooled "
                "over seeds and questions; memorization ratio M_R = p_o / (p_o + p_s), lower when the model "
                "follows the context. All: pooled over every counterfactual question. Known: only the "
                "questions whose factual version the same run answered correctly (the share of cells in "
                "`known`) — Longpre et al. (2021) measure M_R on those, since a model that did not know the "
                "original answer has no knowledge in conflict. Intervals: the ratio linearised per cell "
                f"(delta method) with a {MEAN_INTERVAL}. Seen − test: the same models on training questions "
                "minus unseen ones, paired by seed. "
                + (family_note(decisions, "every method's seen − test difference") if decisions else ""),
    )


def by_type_table(results: Sequence[MethodResults], agg: Aggregates, set_name: str) -> Table:
    variants = [v for v in TYPE_VARIANTS if v in agg.variants.get(set_name, ())]
    headers = [*method_headers(results), "answer type", "questions", "most-frequent EM (%)"]
    for variant in variants:
        headers += [f"{variant} {metric_title(metric)} (%)" for metric in compared_metrics()]
    rows = []
    for r in results:
        for answer_type in list(agg.answer_types.get(set_name, ())) + ["all"]:
            # The "all" row takes the overall numbers of the set, so it matches the accuracy table.
            def interval(variant: str, metric: str):
                if answer_type == "all":
                    return agg.accuracy.get((r.key, set_name, variant, metric))
                return agg.by_type.get((r.key, set_name, variant, answer_type, metric))
            first = interval(variants[0], "contextual_em") if variants else None
            baseline = run_mean(r, lambda run: run.metrics.most_frequent_em_pct.get(set_name, {}).get(answer_type))
            row = [*method_cells(r), answer_type, fmt.count(first.n_questions if first else None),
                   fmt.percent(baseline)]
            for variant in variants:
                row += [_cell(interval(variant, metric)) for metric in compared_metrics()]
            rows.append(tuple(row))
    return Table(
        key=f"by-type-{set_name}",
        title=f"Accuracy on `{set_name}` by answer type",
        headers=tuple(headers),
        rows=tuple(rows),
        caption=f"Seed means, each with its {MEAN_INTERVAL}. Most-frequent EM: exact match of always answering "
                "the most frequent training answer of that type, the floor a model without knowledge "
                "or reading reaches.",
    )


def type_comparison_table(results: Sequence[MethodResults], agg: Aggregates, set_name: str) -> Table:
    rows = []
    for r in compared(results, agg):
        for answer_type in agg.answer_types.get(set_name, ()):
            comparison = agg.comparison(r.key, set_name, TYPE_COMPARISON_VARIANT, "contextual_em", answer_type)
            if comparison is None:
                continue   # a type only another family's questions have
            questions = fmt.MISSING
            if comparison.difference is not None:
                questions = fmt.count(comparison.difference.n_questions_a)
            rows.append((*method_cells(r), answer_type, questions, *_comparison_cells(comparison)))
    reference = reference_label(results, agg)
    decisions = [c.decision for c in agg.type_comparisons if c.set == set_name]
    return Table(
        key=f"type-comparison-{set_name}",
        title=f"Factual contextual EM by answer type on `{set_name}`: each method minus {reference}",
        headers=(*method_headers(results), "answer type", "questions", "Δ contextual EM (pp)", "Holm p",
                 f"vs {reference}"),
        rows=tuple(rows),
        caption="Descriptive. Paired differences per answer type, t intervals on S − 1 degrees of freedom. "
                + family_note(decisions, "every method and answer type of this table")
                + f" {NOT_SIGNIFICANT}: not significant, not ranked.",
    )


def convergence_table(results: Sequence[MethodResults], agg: Aggregates) -> Table:
    rows = []
    for r in results:
        state = agg.convergence[r.key]
        if state.converged:
            continue
        for run, share in zip(r.runs, state.well_formed_pct):
            curve = ", ".join(f"{row.step}: {row.val_loss:.3f}" for row in run.curve if row.val_loss is not None)
            rows.append((*method_cells(r), fmt.text(run.seed), fmt.percent(share), fmt.count(run.train.steps),
                         curve or fmt.MISSING))
    return Table(
        key="not-converged",
        title="Methods that did not converge",
        headers=(*method_headers(results), "seed", "well-formed on factual test (%)", "steps",
                 "validation loss by step"),
        rows=tuple(rows),
        caption=f"A method whose mean share of well-formed generations on factual `test` contexts is "
                f"below {CONVERGED_WELL_FORMED_PCT:.0f} % has not learned the output format: it is "
                "reported here and in the training-curves figure, and left out of the comparisons "
                "with full fine-tuning.",
    )


def measured_cell(values: Sequence[Any], show: Callable[[Any], str]) -> str:
    """A measurement over seeds: its seed mean with the 95 % t interval over seeds (S − 1 degrees
    of freedom) where the seeds measured different values, '12.3 s [11.9 s, 12.8 s]'; the value
    alone where every seed measured the same (or one seed did). Seeds without a value are left
    out."""
    present = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v)]
    if not present:
        return fmt.MISSING
    if len(set(present)) == 1:
        return show(present[0])
    interval = statistics.seed_interval(present, confidence=CONFIDENCE)
    return f"{show(interval.estimate)} [{show(interval.low)}, {show(interval.high)}]"


def run_cell(result: MethodResults, value: Callable[[RunResults], Any], show: Callable[[Any], str]) -> str:
    return measured_cell([value(run) for run in result.runs], show)


MEASURED = ("Measured values: seed mean with its 95 % t interval over seeds [low, high] (S − 1 degrees of freedom) "
            "where the seeds differ; a value without an interval was the same for every seed (counts fixed by the "
            "method, such as parameters and checkpoint size) or comes from one seed.")


def benchmark_mean(run: RunResults, stage: str, field: str) -> float | None:
    """The mean over a Snakemake benchmark file's rows (one per `repeat()`), None without it."""
    return seed_mean([getattr(row, field) for row in run.benchmarks.get(stage, ())])


def efficiency_table(results: Sequence[MethodResults]) -> Table:
    rows = []
    for r in results:
        params = r.runs[0].train.params
        cell = lambda value, show: run_cell(r, value, show)
        job = lambda stage, field, show: cell(lambda run: benchmark_mean(run, stage, field), show)
        one_decimal = lambda value: fmt.decimal(value, 1)
        rows.append((*method_cells(r), fmt.count(params.trainable), fmt.share(params.trainable_pct),
                     fmt.count(params.total), cell(lambda x: x.train.cost.checkpoint_bytes, fmt.bytes_size),
                     cell(lambda x: x.train.cost.step_memory.sum_bytes, fmt.bytes_size),
                     cell(lambda x: x.train.cost.peak_memory_bytes, fmt.bytes_size),
                     cell(lambda x: x.train.cost.step_time_s, fmt.seconds),
                     cell(lambda x: x.train.cost.train_examples_per_s, one_decimal),
                     cell(lambda x: x.metrics.inference.per_example_ms, lambda v: fmt.decimal(v, 2)),
                     cell(lambda x: x.metrics.inference.examples_per_s, one_decimal),
                     cell(lambda x: x.train.cost.wall_time_s, fmt.seconds),
                     cell(lambda x: x.train.cost.max_epoch_time_s, fmt.seconds),
                     job("train", "wall_time_s", fmt.seconds), job("train", "max_rss_bytes", fmt.bytes_size),
                     job("evaluate", "wall_time_s", fmt.seconds), job("evaluate", "max_rss_bytes", fmt.bytes_size)))
    return Table(
        key="efficiency",
        title="Cost of each method",
        headers=(*method_headers(results), "trainable params", "trainable %", "total params", "checkpoint",
                 "step memory (sum of parts)", "measured peak memory", "step time",
                 "train examples/s", "inference ms/example", "inference examples/s", "wall time",
                 "max epoch time", "train job (Snakemake)", "train job max RSS (Snakemake)",
                 "evaluate job (Snakemake)", "evaluate job max RSS (Snakemake)"),
        rows=tuple(rows),
        caption=f"{MEASURED} Checkpoint: the saved trainable "
                "weights only. Step time and "
                "examples/s: training. Wall time: the train stage, as it measured itself. Max epoch "
                "time: the longest complete pass over the training examples (training steps only; "
                f"{fmt.MISSING} when no epoch was completed or train.json does not record it). Memory: see the next table. Snakemake "
                "columns: the job as Snakemake's `benchmark:` measured it from outside (wall-clock "
                "seconds, including the process's start and imports, and the peak resident memory "
                f"of its processes); {fmt.MISSING} where the run was not made by Snakemake (DVC or by "
                "hand) or the job ended before Snakemake sampled it.",
    )


MEMORY_PARTS = ("parameters_bytes", "gradients_bytes", "optimizer_state_bytes", "activations_bytes")


def _ratio_to(value: float | None, reference: float | None) -> str:
    return fmt.decimal(value / reference, 2) if value is not None and reference else fmt.MISSING


def memory_table(results: Sequence[MethodResults]) -> Table:
    def parts_mean(r: MethodResults, name: str) -> float | None:
        return run_mean(r, lambda run: getattr(run.train.cost.step_memory, name))

    def peak_mean(r: MethodResults) -> float | None:
        return run_mean(r, lambda run: run.train.cost.peak_memory_bytes)

    rows = []
    for r in results:
        # Each family's methods against its own full fine-tuning.
        full = next((f for f in results if f.registry_method == "full" and f.family == r.family), None)
        full_sum = parts_mean(full, "sum_bytes") if full else None
        full_peak = peak_mean(full) if full else None
        total, peak = parts_mean(r, "sum_bytes"), peak_mean(r)
        part = lambda name: run_cell(r, lambda run: getattr(run.train.cost.step_memory, name), fmt.bytes_size)
        rows.append((*method_cells(r), *(part(name) for name in MEMORY_PARTS),
                     part("sum_bytes"), _ratio_to(total, full_sum),
                     run_cell(r, lambda run: run.train.cost.peak_memory_bytes, fmt.bytes_size),
                     _ratio_to(peak, full_peak)))
    measures = sorted({run.train.cost.peak_memory_measure for r in results for run in r.runs})
    return Table(
        key="memory",
        title="Training memory by part",
        headers=(*method_headers(results), "parameters", "gradients", "optimizer state", "activations",
                 "sum of parts", "sum / full", "measured peak", "peak / full"),
        rows=tuple(rows),
        caption=f"{MEASURED} Sum of parts: what one training step holds that a method "
                "changes — weights, gradients of the trainable weights, optimizer state and "
                "activations saved for backward, counted exactly (the activations follow the batches a "
                "seed draws), so it is the measure the memory goal uses; ratios to full fine-tuning are "
                "of seed means. Measured "
                "peak: " + "; ".join(measures or ["not measured"]) + "; it adds backward's transient "
                "buffers and the allocator's slack, and varies a little between runs.",
    )


def _compact(value: Any) -> str:
    return fmt.MISSING if value in (None, {}, []) else json.dumps(value, sort_keys=True, separators=(", ", ": "))


def training_table(results: Sequence[MethodResults]) -> Table:
    rows = []
    for r in results:
        for run in r.runs:
            t = run.train
            rows.append((*method_cells(r), fmt.text(run.seed), fmt.text(t.registry_method), fmt.text(t.backbone),
                         fmt.text(t.run.status), fmt.count(t.steps), fmt.count(t.best_step),
                         fmt.decimal(t.best_val_loss, 4), fmt.scalar(float(t.lr)),
                         "tune stage" if t.lr_selected else "params.yaml",
                         _compact(t.run.params.get("options"))))
    return Table(
        key="training",
        title="Training runs",
        headers=(*method_headers(results), "seed", "registry method", "backbone", "status", "steps", "best step",
                 "best val loss", "lr", "lr from", "options"),
        rows=tuple(rows),
        caption="One row per training run. lr: the learning rate the run trained with; from the "
                "`tune` stage's grid or taken from params.yaml. Prompt tuning trains "
                "num_virtual_tokens × d_model embeddings: peft's seq2seq default keeps twice as many "
                "(a decoder copy that gets exactly zero gradient, since peft prepends only the "
                "encoder's), so parameter counts in peft-based papers can read twice this.",
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


MIXTURE_COLUMNS = (("factual", "contextual_em"), ("factual", "parametric_em"), ("counterfactual", "contextual_em"),
                   ("counterfactual", "parametric_em"), ("empty", "contextual_em"), ("random", "contextual_em"))


def _group_slug(group: MixtureGroup) -> str:
    return group.registry_method if group.family is None else f"{group.family}-{group.registry_method}"


def _of_family(group: MixtureGroup) -> str:
    return "" if group.family is None else f" ({group.family})"


def mixture_table(group: MixtureGroup, agg: Aggregates) -> Table:
    """DisentQA's results table: training mixture × test variant, both answer heads."""
    rows = []
    for run in group.runs:
        cells = [_cell(agg.accuracy.get((run.key, EFFECT_SET, variant, metric))) for variant, metric in MIXTURE_COLUMNS]
        any_cell = agg.accuracy.get((run.key, EFFECT_SET, "factual", "contextual_em"))
        rows.append((run.label, f"`{run.method}`", fmt.count(run.steps),
                     fmt.count(any_cell.n_seeds if any_cell else None), *cells))
    headers = ["mixture", "method", "steps", "seeds"] + [
        f"{variant} {metric_title(metric)} (%)" for variant, metric in MIXTURE_COLUMNS]
    return Table(
        key=f"mixture-{_group_slug(group)}",
        title=f"Training mixture of `{group.registry_method}`{_of_family(group)} × `{EFFECT_SET}` variant",
        headers=tuple(headers),
        rows=tuple(rows),
        caption="Mixtures as in DisentQA: f factual, cf counterfactual, a answerability (empty and "
                f"random contexts, answer \"unanswerable\"). Seed means, each with its {MEAN_INTERVAL}. The "
                "contextual answer on empty and random contexts is right only when it is "
                "\"unanswerable\", which a mixture without a never teaches.",
    )


def answerability_effect_table(group: MixtureGroup) -> Table:
    rows = []
    for effect in group.effects:
        d = effect.difference
        mark = direction_mark(d, effect.significant)
        rows.append((f"`{effect.with_a}` − `{effect.without_a}`", effect.variant, fmt.count(d.n_seeds),
                     fmt.signed_interval(d.difference, d.low, d.high), fmt.p_value(effect.holm_p), mark))
    return Table(
        key=f"answerability-{_group_slug(group)}",
        title=f"Adding answerability (empty + random) to a mixture of `{group.registry_method}`{_of_family(group)}: "
              f"contextual EM on `{EFFECT_SET}`",
        headers=("runs compared", "variant", "seeds", "Δ contextual EM (pp)", "Holm p", "with a"),
        rows=tuple(rows),
        caption="Paired by seed and question: each run with empty and random contexts in its mixture "
                "minus the run with the same mixture and settings without them (f+a − f and f+cf+a − f+cf "
                "where those runs exist), t intervals on S − 1 degrees of freedom. "
                + family_note([e.decision for e in group.effects], "every pair and variant of this table")
                + " DisentQA (T5-11B) found that answerability costs factual contextual EM at most a few "
                "points and raises counterfactual contextual EM.",
    )
