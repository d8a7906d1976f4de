"""The report's figures, built from loaded results and their aggregates as matplotlib Figures
(no pyplot: no global state, no interactive backend), and their PNG bytes. Bars are seed means
with error bars at the 95 % interval."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cfqa.report.aggregate import Aggregates
from cfqa.report.inputs import MethodResults
from cfqa.report.tables import run_mean

_MIB = 1024 * 1024

Bar = tuple[float, float, float] | None        # (estimate, low, high)


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG; without the Software metadata the bytes depend only on the data."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def method_colors(results: Sequence[MethodResults]) -> dict[str, str]:
    """One colour per method, the same in every figure even where a method has no data."""
    return {r.name: f"C{index % 10}" for index, r in enumerate(results)}


def _no_data(axes: Axes, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="0.4")
    axes.set_xticks([])
    axes.set_yticks([])


def _bar(interval) -> Bar:
    if interval is None or interval.estimate != interval.estimate:
        return None
    return interval.estimate, interval.low, interval.high


def _grouped_bars(axes: Axes, groups: list[str], series: dict[str, list[Bar]],
                  colors: dict[str, str] | None = None) -> None:
    """One cluster of bars per group, one bar per series, error bars at the interval; absent
    values leave a gap."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(groups))
    for index, (label, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else v[0] for v in values])
        low = np.array([0.0 if v is None or v[1] != v[1] else v[0] - v[1] for v in values])
        high = np.array([0.0 if v is None or v[2] != v[2] else v[2] - v[0] for v in values])
        axes.bar(positions + (index - (len(series) - 1) / 2) * width, heights, width, label=label,
                 color=(colors or {}).get(label, f"C{index % 10}"), yerr=np.vstack([low, high]),
                 error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"})
    axes.set_xticks(positions, groups)


def contextual_em_figure(results: Sequence[MethodResults], agg: Aggregates) -> Figure:
    sets = list(agg.sets)
    figure = Figure(figsize=(5.2 * max(len(sets), 1), 3.8), layout="constrained")
    axes_list = figure.subplots(1, max(len(sets), 1), squeeze=False)[0]
    for axes, set_name in zip(axes_list, sets or ["test"]):
        variants = list(agg.variants.get(set_name, ()))
        if not variants:
            _no_data(axes, f"no `{set_name}` results")
            continue
        _grouped_bars(axes, variants, {
            r.name: [_bar(agg.accuracy.get((r.name, set_name, v, "contextual_em"))) for v in variants]
            for r in results}, method_colors(results))
        axes.set_title(f"contextual EM on {set_name}")
        axes.set_ylabel("EM (%), seed mean and 95 % interval")
        axes.set_ylim(0, 100)
    axes_list[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def memorization_figure(results: Sequence[MethodResults], agg: Aggregates) -> Figure:
    figure = Figure(figsize=(max(4.5, 0.9 * len(results) + 2), 3.6), layout="constrained")
    axes = figure.subplots()
    sets = [s for s in agg.sets if any((r.name, s) in agg.memorization for r in results)]
    series = {s: [_bar(getattr(agg.memorization.get((r.name, s)), "interval", None)) for r in results]
              for s in sets}
    if not any(v is not None for values in series.values() for v in values):
        _no_data(axes, "no memorization ratios")
        return figure
    _grouped_bars(axes, [r.name for r in results], series)
    axes.set_ylabel("memorization ratio M_R (%)")
    axes.set_ylim(0, 100)
    axes.set_title("memorization ratio on counterfactual contexts (95 % interval)")
    axes.legend(fontsize="small")
    return figure


def accuracy_vs_cost_figure(results: Sequence[MethodResults], agg: Aggregates, set_name: str = "test",
                            variant: str = "counterfactual") -> Figure:
    """Contextual EM (seed mean, interval) on one set and variant against trainable share and
    training-step memory."""
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    colors = method_colors(results)
    for axes, xlabel, cost in (
            (figure.add_subplot(1, 2, 1), "trainable parameters (%)",
             lambda r: r.runs[0].train.params.trainable_pct),
            (figure.add_subplot(1, 2, 2), "training-step memory, sum of parts (MiB)",
             lambda r: (run_mean(r, lambda run: run.train.cost.step_memory.sum_bytes) or 0) / _MIB)):
        drawn = False
        for r in results:
            bar, x = _bar(agg.accuracy.get((r.name, set_name, variant, "contextual_em"))), cost(r)
            if bar is None or not x or x <= 0:
                continue
            axes.errorbar([x], [bar[0]], yerr=[[bar[0] - bar[1]], [bar[2] - bar[0]]], fmt="o",
                          color=colors[r.name], capsize=2)
            axes.annotate(r.name, (x, bar[0]), textcoords="offset points", xytext=(4, 4), fontsize="small")
            drawn = True
        if not drawn:
            _no_data(axes, "no data")
            continue
        # Shares span 0.01 % to 100 % across methods: a log axis, labelled in plain numbers.
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(ticker.NullFormatter())
        axes.margins(x=0.15, y=0.15)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(f"contextual EM, {set_name} {variant} (%)")
    return figure


def _seed_mean_curve(result: MethodResults, column: str) -> tuple[list[int], list[float]]:
    """The mean over seeds at the steps every seed logged."""
    per_seed = [{row.step: getattr(row, column) for row in run.curve if getattr(row, column) is not None}
                for run in result.runs]
    if not per_seed or not all(per_seed):
        return [], []
    steps = sorted(set.intersection(*(set(curve) for curve in per_seed)))
    return steps, [float(np.mean([curve[s] for curve in per_seed])) for s in steps]


def training_curves_figure(results: Sequence[MethodResults]) -> Figure:
    """Each seed as a thin line, the seed mean as a thick one, per method."""
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    train_axes, val_axes = figure.subplots(1, 2, sharex=True)
    colors = method_colors(results)
    for axes, column, title in ((train_axes, "train_loss", "training loss"),
                                (val_axes, "val_loss", "validation loss")):
        drawn = False
        for r in results:
            for run in r.runs:
                points = [(row.step, getattr(row, column)) for row in run.curve if getattr(row, column) is not None]
                if points:
                    steps, values = zip(*points)
                    axes.plot(steps, values, color=colors[r.name], linewidth=0.6, alpha=0.45)
                    drawn = True
            steps, means = _seed_mean_curve(r, column)
            if steps:
                axes.plot(steps, means, marker="." if column == "val_loss" else None, label=r.name,
                          color=colors[r.name], linewidth=1.6)
        if not drawn:
            _no_data(axes, "no training curves")
            continue
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.legend(fontsize="small")
    return figure


# File name (without .png) -> caption. The names are fixed so that the workflow can
# declare every plot as an output; a plot without data says so instead of being absent.
FIGURE_CAPTIONS = {
    "contextual_em": "Contextual exact match per method and context variant: seed means with 95 % "
                     "intervals (error bars).",
    "memorization_ratio": "Memorization ratio M_R (%) on counterfactual contexts, unseen (test) vs seen "
                          "questions: pooled over seeds, with 95 % intervals (error bars).",
    "accuracy_vs_cost": "Contextual EM on counterfactual test contexts (seed mean, 95 % interval) against "
                        "trainable share and training-step memory (sum of parts).",
    "training_curves": "Training and validation loss per method: each seed thin, the seed mean thick.",
}


def build_figures(results: Sequence[MethodResults], agg: Aggregates) -> dict[str, Figure]:
    return {
        "contextual_em": contextual_em_figure(results, agg),
        "memorization_ratio": memorization_figure(results, agg),
        "accuracy_vs_cost": accuracy_vs_cost_figure(results, agg),
        "training_curves": training_curves_figure(results),
    }
