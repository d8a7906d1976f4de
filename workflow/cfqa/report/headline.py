"""The report's headline figure, the answer before any table: each method minus its model
family's full fine-tuning on the primary endpoint's metric and question set (params
`report.primary_endpoint`), one panel per context variant (factual, counterfactual, empty,
random), the mean paired difference with its interval and each seed's own difference as a dot.

Nothing here is recomputed: every point, interval and filled marker is the comparison table's
(`Aggregates.comparison` of that set, metric and variant: the same Holm family, each interval at
the level of its Holm step), and a marker is filled exactly where `Comparison.significant` holds,
so the figure and the table "Each method minus full on `set`" cannot disagree."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from cfqa.config import PrimaryEndpoint
from cfqa.report.aggregate import Aggregates, Comparison, metric_title
from cfqa.report.inputs import MethodResults
from cfqa.report.plots import method_colors, no_data, seed_dots
from cfqa.report.tables import compared, reference_label

HEADLINE = "headline"                  # the figure's file stem in the reports directory
POINT = "headline-point"               # gid of each method's mean marker with its interval


@dataclass(frozen=True)
class HeadlineRow:
    """One compared method: its comparison on each of the headline's variants (None where the
    method's family has no such variant)."""

    method: str                        # MethodResults.key
    color: str
    cells: tuple[Comparison | None, ...]


@dataclass(frozen=True)
class Headline:
    endpoint: PrimaryEndpoint
    variants: tuple[str, ...]
    rows: tuple[HeadlineRow, ...]
    reference: str                     # how the report names full fine-tuning (`full`, or per family)
    family_size: int                   # the comparison table's Holm family

    @property
    def metric_title(self) -> str:
        return metric_title(self.endpoint.metric)


def headline(results: Sequence[MethodResults], agg: Aggregates, endpoint: PrimaryEndpoint) -> Headline:
    """The comparisons the figure draws, taken from the aggregates as they are."""
    variants = tuple(agg.variants.get(endpoint.set, ()))
    colors = method_colors(results)
    rows = tuple(HeadlineRow(method=r.key, color=colors[r.key],
                             cells=tuple(agg.comparison(r.key, endpoint.set, v, endpoint.metric) for v in variants))
                 for r in compared(results, agg))
    size = next((c.decision.family_size for c in agg.comparisons
                 if c.set == endpoint.set and c.decision is not None), 0)
    reference = reference_label(results, agg) if agg.reference is not None else "full fine-tuning"
    return Headline(endpoint=endpoint, variants=variants, rows=rows, reference=reference, family_size=size)


def headline_title(h: Headline) -> str:
    return f"Each method minus {h.reference}: {h.metric_title} on `{h.endpoint.set}`, by context variant"


def headline_caption(h: Headline) -> str:
    """What the figure shows, with this run's family and endpoint."""
    if not h.rows:
        return "No method is compared with full fine-tuning in this run (no `full` run, or no other method)."
    return (
        f"Each row is a method minus {h.reference} on the same seeds and questions: {h.metric_title} on "
        f"`{h.endpoint.set}`, one panel per context variant, in percentage points (right of the line: above full "
        "fine-tuning). Marker: the mean paired difference; bar: its interval; dots: each seed's own difference. "
        f"These are the intervals of the table \"Each method minus {h.reference} on `{h.endpoint.set}`\" (one Holm "
        f"family: its {h.family_size} comparisons, every method, variant and metric), each at the level of its Holm "
        "step: a marker is filled where that table marks the difference higher or lower, and there its bar "
        "excludes 0; an open marker is not distinguishable from full fine-tuning here (n.s.). No bar: one seed, "
        f"no seed-level interval. The primary endpoint ({h.endpoint.variant} panel) is decided on its own in "
        "\"What this run can resolve\", over that endpoint's comparisons only.")


def _point(axes: Axes, y: float, comparison: Comparison, color: str) -> None:
    d = comparison.difference
    spread = None if math.isnan(d.low) else [[d.difference - d.low], [d.high - d.difference]]
    axes.errorbar([d.difference], [y], xerr=spread, fmt="o", color=color, markersize=6, capsize=3,
                  elinewidth=1.4, markeredgewidth=1.4, zorder=3, gid=POINT,
                  markerfacecolor=color if comparison.significant else "white")


def _panel(axes: Axes, h: Headline, index: int) -> None:
    variant = h.variants[index]
    xs: list[float] = [0.0]
    dots_y, dots = [], []
    label_at = blended_transform_factory(axes.transAxes, axes.transData)
    for y, row in enumerate(h.rows):
        comparison = row.cells[index]
        if comparison is None:
            continue
        if comparison.difference is None:
            axes.text(0.5, y, comparison.excluded or "not compared", transform=label_at, ha="center",
                      va="center", fontsize="small", color="0.45")
            continue
        d = comparison.difference
        _point(axes, y, comparison, row.color)
        xs += [v for v in (d.difference, d.low, d.high, *d.per_seed) if not math.isnan(v)]
        dots_y.append(y)
        dots.append(tuple(v for v in d.per_seed if not math.isnan(v)))
    seed_dots(axes, dots_y, dots, along="x")
    axes.axvline(0.0, color="0.35", linewidth=0.9, zorder=1)
    low, high = min(xs), max(xs)
    pad = max(0.08 * (high - low), 1.0)
    axes.set_xlim(low - pad, high + pad)
    axes.set_ylim(len(h.rows) - 0.5, -0.5)          # first method on top
    axes.grid(axis="x", color="0.9", linewidth=0.6)
    axes.set_axisbelow(True)
    axes.set_xlabel(f"Δ {h.metric_title} (pp)", fontsize="small")
    primary = variant == h.endpoint.variant
    axes.set_title(f"{variant}" + (" (primary endpoint)" if primary else ""), fontsize="medium",
                   fontweight="bold" if primary else "normal")
    if primary:
        axes.set_facecolor("#f4f7fb")


def legend_handles() -> list[Line2D]:
    return [
        Line2D([], [], color="0.25", marker="o", markerfacecolor="0.25", linestyle="-", linewidth=1.4,
               label="differs from full fine-tuning (Holm): interval excludes 0"),
        Line2D([], [], color="0.25", marker="o", markerfacecolor="white", linestyle="-", linewidth=1.4,
               label="not distinguishable here (n.s.)"),
        Line2D([], [], color="0.1", marker="o", markersize=3, markeredgewidth=0, linestyle="none",
               label="one seed's difference"),
    ]


def headline_figure(h: Headline) -> Figure:
    """One panel per variant side by side, methods as rows (shared), zero marked."""
    panels = max(len(h.variants), 1)
    figure = Figure(figsize=(10.5, 1.35 + 0.34 * max(len(h.rows), 2)), layout="constrained")
    axes_row = figure.subplots(1, panels, sharey=True, squeeze=False)[0]
    if not h.rows or not h.variants:
        no_data(axes_row[0], "no method compared with full fine-tuning")
        for axes in axes_row[1:]:
            axes.set_axis_off()
        return figure
    for index, axes in enumerate(axes_row):
        _panel(axes, h, index)
    axes_row[0].set_yticks(range(len(h.rows)), [row.method for row in h.rows])
    for axes in axes_row[1:]:
        axes.tick_params(axis="y", left=False)
    figure.legend(handles=legend_handles(), loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    return figure
