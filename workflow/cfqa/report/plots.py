"""The report's figures, built from loaded results as matplotlib Figures (no pyplot: no global
state, no interactive backend), and their PNG bytes."""
from __future__ import annotations

import io

import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cfqa.formats import VARIANTS
from cfqa.report.inputs import MethodResults
from cfqa.report.tables import variant_scores

_MIB = 1024 * 1024


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG; without the Software metadata the bytes depend only on the data."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def method_colors(results: list[MethodResults]) -> dict[str, str]:
    """One colour per method, the same in every figure even where a method has no data."""
    return {r.name: f"C{index % 10}" for index, r in enumerate(results)}


def _no_data(axes: Axes, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="0.4")
    axes.set_xticks([])
    axes.set_yticks([])


def _grouped_bars(axes: Axes, groups: list[str], series: dict[str, list[float | None]],
                  colors: dict[str, str] | None = None) -> None:
    """One cluster of bars per group, one bar per series; absent values leave a gap."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(groups))
    for index, (label, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        axes.bar(positions + (index - (len(series) - 1) / 2) * width, heights, width, label=label,
                 color=(colors or {}).get(label, f"C{index % 10}"))
    axes.set_xticks(positions, groups)


def _contextual_em(result: MethodResults, set_name: str, variant: str) -> float | None:
    cell = variant_scores(result, set_name, variant)
    return cell.contextual_em_pct if cell else None


def contextual_em_figure(results: list[MethodResults], sets: list[str]) -> Figure:
    figure = Figure(figsize=(5.2 * max(len(sets), 1), 3.8), layout="constrained")
    axes_list = figure.subplots(1, max(len(sets), 1), squeeze=False)[0]
    for axes, set_name in zip(axes_list, sets or ["test"]):
        variants = [v for v in VARIANTS if any(variant_scores(r, set_name, v) for r in results)]
        if not variants:
            _no_data(axes, f"no `{set_name}` results")
            continue
        _grouped_bars(axes, variants, {
            r.name: [_contextual_em(r, set_name, v) for v in variants]
            for r in results}, method_colors(results))
        axes.set_title(f"contextual EM on {set_name}")
        axes.set_ylabel("EM (%)")
        axes.set_ylim(0, 100)
    axes_list[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def memorization_figure(results: list[MethodResults], sets: list[str]) -> Figure:
    figure = Figure(figsize=(max(4.5, 0.9 * len(results) + 2), 3.6), layout="constrained")
    axes = figure.subplots()
    series = {s: [getattr(r.metrics.memorization.get(s), "memorization_ratio_pct", None) for r in results]
              for s in sets}
    if not any(v is not None for values in series.values() for v in values):
        _no_data(axes, "no memorization ratios")
        return figure
    _grouped_bars(axes, [r.name for r in results], series)
    axes.set_ylabel("memorization ratio M_R (%)")
    axes.set_ylim(0, 100)
    axes.set_title("memorization ratio on counterfactual contexts")
    axes.legend(fontsize="small")
    return figure


def _mebibytes(value: float | None) -> float | None:
    return None if value is None else value / _MIB


def _scatter_labelled(axes: Axes, points: list[tuple[str, float | None, float | None]],
                      colors: dict[str, str]) -> bool:
    shown = [(name, x, y) for name, x, y in points if x is not None and y is not None and x > 0]
    for name, x, y in shown:
        axes.scatter([x], [y], color=colors[name])
        axes.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    return bool(shown)


def accuracy_vs_cost_figure(results: list[MethodResults], set_name: str = "test",
                            variant: str = "counterfactual") -> Figure:
    """Contextual EM on one set and variant against trainable share and peak memory."""
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    by_share, by_memory = figure.subplots(1, 2)
    accuracy = {r.name: _contextual_em(r, set_name, variant) for r in results}
    axes_specs = (
        (by_share, "trainable parameters (%)",
         [(r.name, r.train.params.trainable_pct, accuracy[r.name]) for r in results]),
        (by_memory, "training-step memory, sum of parts (MiB)",
         [(r.name, _mebibytes(r.train.cost.step_memory.sum_bytes), accuracy[r.name]) for r in results]),
    )
    for axes, xlabel, points in axes_specs:
        if not _scatter_labelled(axes, points, method_colors(results)):
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


def training_curves_figure(results: list[MethodResults]) -> Figure:
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    train_axes, val_axes = figure.subplots(1, 2, sharex=True)
    colors = method_colors(results)
    for axes, column, title in ((train_axes, "train_loss", "training loss"),
                                (val_axes, "val_loss", "validation loss")):
        drawn = False
        for r in results:
            points = [(row.step, getattr(row, column)) for row in r.curve if getattr(row, column) is not None]
            if points:
                steps, values = zip(*points)
                axes.plot(steps, values, marker="." if column == "val_loss" else None, label=r.name,
                          color=colors[r.name])
                drawn = True
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
    "contextual_em": "Contextual exact match per method and context variant.",
    "memorization_ratio": "Memorization ratio M_R (%) on counterfactual contexts, unseen (test) vs seen questions.",
    "accuracy_vs_cost": "Contextual EM on counterfactual test contexts against trainable share and "
                        "training-step memory (sum of parts).",
    "training_curves": "Training and validation loss per method.",
}


def build_figures(results: list[MethodResults], sets: list[str]) -> dict[str, Figure]:
    return {
        "contextual_em": contextual_em_figure(results, sets),
        "memorization_ratio": memorization_figure(results, sets),
        "accuracy_vs_cost": accuracy_vs_cost_figure(results),
        "training_curves": training_curves_figure(results),
    }
