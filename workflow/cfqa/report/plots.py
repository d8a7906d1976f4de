"""The report's figures, built from loaded results and their aggregates as matplotlib Figures
(no pyplot: no global state, no interactive backend), and their PNG bytes. Bars and points are
seed means with error bars at the 95 % t interval over seeds, and every mean has its seeds' own
values drawn as dots beside it: with three seeds the dots say more than the bar."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox, ScaledTranslation

from cfqa.report.aggregate import Aggregates
from cfqa.report.inputs import MethodResults
from cfqa.report.pareto import pareto_front
from cfqa.report.tables import run_mean

_MIB = 1024 * 1024

Bar = tuple[float, float, float, tuple[float, ...]] | None        # (estimate, low, high, per-seed values)
SEED_DOTS = "per-seed"         # gid of the dots that show each seed's value
SEED_DOT_OFFSET_PT = 6         # dots sit this far right of their mean's error bar


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG; without the Software metadata the bytes depend only on the data."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def method_colors(results: Sequence[MethodResults]) -> dict[str, str]:
    """One colour per method, the same in every figure even where a method has no data."""
    return {r.key: f"C{index % 10}" for index, r in enumerate(results)}


def no_data(axes: Axes, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="0.4")
    axes.set_xticks([])
    axes.set_yticks([])


def _bar(interval) -> Bar:
    if interval is None or interval.estimate != interval.estimate:
        return None
    return interval.estimate, interval.low, interval.high, tuple(v for v in interval.per_seed if v == v)


def seed_dots(axes: Axes, x: Sequence[float], values: Sequence[Sequence[float]], along: str = "y") -> None:
    """Each seed's value as a small dot beside its mean (offset in points, so on a log axis
    too); one artist per axes, gid SEED_DOTS. `along` is the axis the values lie on: "y" puts
    the dots right of a vertical interval, "x" (methods as rows, values across) just below a
    horizontal one."""
    positions = [position for position, seeds in zip(x, values) for _ in seeds]
    seeds = [value for per_seed in values for value in per_seed]
    if not seeds:
        return
    if along == "y":
        xs, ys, offset = positions, seeds, (SEED_DOT_OFFSET_PT / 72, 0)
    else:
        xs, ys, offset = seeds, positions, (0, -SEED_DOT_OFFSET_PT / 72)
    shift = ScaledTranslation(*offset, axes.figure.dpi_scale_trans)
    axes.plot(xs, ys, linestyle="none", marker="o", markersize=2.5, markerfacecolor="0.1", markeredgewidth=0,
              alpha=0.8, zorder=5, gid=SEED_DOTS, transform=axes.transData + shift)


def _grouped_bars(axes: Axes, groups: list[str], series: dict[str, list[Bar]],
                  colors: dict[str, str] | None = None) -> None:
    """One cluster of bars per group, one bar per series, error bars at the interval; absent
    values leave a gap."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(groups))
    dots_x, dots = [], []
    for index, (label, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else v[0] for v in values])
        low = np.array([0.0 if v is None or v[1] != v[1] else v[0] - v[1] for v in values])
        high = np.array([0.0 if v is None or v[2] != v[2] else v[2] - v[0] for v in values])
        x = positions + (index - (len(series) - 1) / 2) * width
        axes.bar(x, heights, width, label=label,
                 color=(colors or {}).get(label, f"C{index % 10}"), yerr=np.vstack([low, high]),
                 error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"})
        dots_x += list(x)
        dots += [() if v is None else v[3] for v in values]
    seed_dots(axes, dots_x, dots)
    axes.set_xticks(positions, groups)


def contextual_em_figure(results: Sequence[MethodResults], agg: Aggregates) -> Figure:
    sets = list(agg.sets)
    figure = Figure(figsize=(5.2 * max(len(sets), 1), 3.8), layout="constrained")
    axes_list = figure.subplots(1, max(len(sets), 1), squeeze=False)[0]
    for axes, set_name in zip(axes_list, sets or ["test"]):
        variants = list(agg.variants.get(set_name, ()))
        if not variants:
            no_data(axes, f"no `{set_name}` results")
            continue
        _grouped_bars(axes, variants, {
            r.key: [_bar(agg.accuracy.get((r.key, set_name, v, "contextual_em"))) for v in variants]
            for r in results}, method_colors(results))
        axes.set_title(f"contextual EM on {set_name}")
        axes.set_ylabel("EM (%): seed mean, 95 % interval, seeds")
        axes.set_ylim(0, 100)
    axes_list[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def memorization_figure(results: Sequence[MethodResults], agg: Aggregates) -> Figure:
    figure = Figure(figsize=(max(4.5, 0.9 * len(results) + 2), 3.6), layout="constrained")
    axes = figure.subplots()
    sets = [s for s in agg.sets if any((r.key, s) in agg.memorization for r in results)]
    series = {s: [_bar(getattr(agg.memorization.get((r.key, s)), "interval", None)) for r in results]
              for s in sets}
    if not any(v is not None for values in series.values() for v in values):
        no_data(axes, "no memorization ratios")
        return figure
    _grouped_bars(axes, [r.key for r in results], series)
    axes.set_ylabel("memorization ratio M_R (%)")
    axes.set_ylim(0, 100)
    axes.set_title("memorization ratio on counterfactual contexts (95 % interval, dots: seeds)")
    # Outside the axes: inside, the legend would cover bars near 100 %.
    axes.legend(title="questions", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


@dataclass(frozen=True)
class CostPoint:
    """One method on an accuracy-vs-cost panel."""
    method: str
    cost: float
    accuracy: float             # seed mean
    low: float                  # 95 % interval
    high: float
    color: str
    converged: bool = True      # a method that did not converge is drawn but not ranked
    per_seed: tuple[float, ...] = ()   # each seed's value, drawn as dots beside the point


FRONT_LABEL = "Pareto front: no other converged method is better on EM or cost\nwithout being worse on the other"
NOT_CONVERGED_LABEL = "open marker: did not converge,\nnot ranked"

# Label offsets from the point in typographic points with their alignment, in order of
# preference; the far ones get a leader line.
_NEAR, _FAR = 7, 16
_LABEL_SPOTS = (
    ((_NEAR, _NEAR), "left", "bottom"), ((_NEAR, -_NEAR), "left", "top"),
    ((-_NEAR, _NEAR), "right", "bottom"), ((-_NEAR, -_NEAR), "right", "top"),
    ((0, _NEAR + 1), "center", "bottom"), ((0, -_NEAR - 1), "center", "top"),
    ((_FAR, _FAR), "left", "bottom"), ((_FAR, -_FAR), "left", "top"),
    ((-_FAR, _FAR), "right", "bottom"), ((-_FAR, -_FAR), "right", "top"),
    ((0, 2 * _FAR), "center", "bottom"), ((0, -2 * _FAR), "center", "top"),
    ((2 * _FAR, 0), "left", "center"), ((-2 * _FAR, 0), "right", "center"),
    ((2 * _FAR, 2 * _FAR), "left", "bottom"), ((-2 * _FAR, 2 * _FAR), "right", "bottom"),
    ((2 * _FAR, -2 * _FAR), "left", "top"), ((-2 * _FAR, -2 * _FAR), "right", "top"),
    ((0, 3 * _FAR), "center", "bottom"), ((_FAR, 3 * _FAR), "left", "bottom"), ((-_FAR, 3 * _FAR), "right", "bottom"),
)
_MARKER_PT = 6                  # the front's ring radius: labels keep clear of it


def _is_far(offset: tuple[int, int]) -> bool:
    return abs(offset[0]) > _NEAR or abs(offset[1]) > _NEAR + 1


def cost_panel(axes: Axes, points: Sequence[CostPoint], xlabel: str, ylabel: str) -> list[CostPoint]:
    """Points with their intervals against cost and the Pareto front of the converged ones
    as a step line through ringed markers; returns the front, by ascending cost. Labels are
    placed by place_labels once the figure's layout is final."""
    if not points:
        no_data(axes, "no data")
        return []
    for p in points:
        axes.errorbar([p.cost], [p.accuracy], yerr=[[p.accuracy - p.low], [p.high - p.accuracy]], fmt="o",
                      color=p.color, capsize=2, zorder=2, markerfacecolor=p.color if p.converged else "white")
    seed_dots(axes, [p.cost for p in points], [p.per_seed for p in points])
    by_name = {p.method: p for p in points}
    front = [by_name[name] for name, _, _ in
             pareto_front([(p.method, p.cost, p.accuracy) for p in points if p.converged])]
    if front:
        # Post steps: the best EM reachable at each cost is the last front point at or below it.
        axes.step([p.cost for p in front], [p.accuracy for p in front], where="post", color="0.3",
                  linestyle="--", linewidth=1, zorder=1, gid="pareto-step")
        axes.plot([p.cost for p in front], [p.accuracy for p in front], linestyle="none", marker="o",
                  markersize=2 * _MARKER_PT, markerfacecolor="none", markeredgecolor="0.15",
                  markeredgewidth=1.2, zorder=3, gid="pareto-rings")
    _cost_axis(axes, [p.cost for p in points])
    # EM is a percentage: room for labels around the intervals, and past 0 or 100 only as far
    # as a marker there needs.
    low, high = min(p.low for p in points), max(p.high for p in points)
    pad = max(0.2 * (high - low), 4.0)
    axes.set_ylim(max(low - pad, -3.0), min(high + pad, 103.0))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    return front


def _plain(value: float, _position=None) -> str:
    return f"{value:g}"


def _cost_axis(axes: Axes, costs: Sequence[float]) -> None:
    """A log axis in plain numbers where costs span a decade or more (trainable shares run from
    0.01 % to 100 %), labelled at 2 and 5 too below two decades; a linear one otherwise, where
    a log axis could show no tick at all."""
    axes.margins(x=0.2)
    ratio = max(costs) / min(costs)
    if ratio < 10:
        return
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    if ratio < 100:
        axes.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
        axes.xaxis.set_minor_formatter(ticker.FuncFormatter(_plain))
    else:
        axes.xaxis.set_minor_formatter(ticker.NullFormatter())


def legend_handles(points: Sequence[CostPoint]) -> list[Line2D]:
    """The front's entry where a converged point is drawn; the open marker's where one that
    did not converge is."""
    handles = []
    if any(p.converged for p in points):
        handles.append(Line2D([], [], color="0.3", linestyle="--", linewidth=1, marker="o",
                              markersize=2 * _MARKER_PT, markerfacecolor="none", markeredgecolor="0.15",
                              markeredgewidth=1.2, label=FRONT_LABEL))
    if not all(p.converged for p in points):
        handles.append(Line2D([], [], linestyle="none", marker="o", color="0.3", markerfacecolor="white",
                              label=NOT_CONVERGED_LABEL))
    return handles


def _overlap(a: Bbox, b: Bbox) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def _distance(box: Bbox, point) -> float:
    """From `point` to the nearest edge of `box` (0 inside it)."""
    x, y = point
    return float(np.hypot(max(box.x0 - x, 0.0, x - box.x1), max(box.y0 - y, 0.0, y - box.y1)))


def _outside(box: Bbox, frame: Bbox) -> float:
    """The area of `box` outside `frame`."""
    return box.width * box.height - _overlap(box, frame)


def place_labels(figure: Figure, panels: Sequence[tuple[Axes, Sequence[CostPoint]]]) -> None:
    """Each point's name at the first spot (of _LABEL_SPOTS) that overlaps no label placed before
    and no marker and stays inside the axes, else at the spot that overlaps least. Greedy and
    deterministic: the same points give the same picture. (adjustText would do this with a
    physics-style repel, but is no dependency of the project.)"""
    figure.draw_without_rendering()          # final limits and layout: display positions hold
    renderer = figure.canvas.get_renderer()
    for axes, points in panels:
        frame = axes.get_window_extent(renderer)
        centers = {p.method: axes.transData.transform((p.cost, p.accuracy)) for p in points}
        radius = _MARKER_PT * figure.dpi / 72
        markers = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in centers.values()]
        bars = [Bbox([axes.transData.transform((p.cost, p.low)) - (1, 0),
                      axes.transData.transform((p.cost, p.high)) + (1, 0)]) for p in points]
        placed: list[Bbox] = []
        for p in sorted(points, key=lambda p: (-p.accuracy, p.cost, p.method)):
            label = axes.annotate(p.method, (p.cost, p.accuracy), textcoords="offset points", xytext=(0, 0),
                                  fontsize="small", zorder=4)
            # Among points a marker's width apart only a leader line tells which label is whose.
            crowded = any(name != p.method and np.hypot(*(center - centers[p.method])) < 2 * radius
                          for name, center in centers.items())
            best = None
            for rank, (offset, ha, va) in enumerate(_LABEL_SPOTS):
                if crowded and not _is_far(offset):
                    continue
                label.xyann = offset
                label.set_horizontalalignment(ha)
                label.set_verticalalignment(va)
                box = label.get_window_extent(renderer)
                own = _distance(box, centers[p.method])
                # A label nearer another point than its own reads as that point's.
                closer = sum(1 for name, center in centers.items()
                             if name != p.method and _distance(box, center) < own)
                penalty = (100 * sum(_overlap(box, other) for other in placed)
                           + 50 * sum(_overlap(box, m) for m in markers) + 50 * _outside(box, frame)
                           + sum(_overlap(box, bar) for bar in bars) + 5000 * closer)
                if best is None or (penalty, rank) < best[:2]:
                    best = (penalty, rank, offset, ha, va, box)
                if penalty == 0:
                    break
            _, _, offset, ha, va, box = best
            label.remove()
            far = _is_far(offset)
            # In the point's colour: which label is whose even where points crowd.
            axes.annotate(p.method, (p.cost, p.accuracy), textcoords="offset points", xytext=offset,
                          ha=ha, va=va, fontsize="small", zorder=4, color=p.color,
                          arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.6, "shrinkA": 1,
                                      "shrinkB": _MARKER_PT} if far else None)
            placed.append(box)


def cost_figure(panels: Sequence[tuple[str, str, Sequence[CostPoint]]], title: str | None = None) -> Figure:
    """One panel per (x label, y label, points), side by side, with one legend entry for the
    Pareto front and labels that keep clear of each other; `title` heads the figure (its PNG
    is also read on its own)."""
    figure = Figure(figsize=(4.5 * max(len(panels), 1), 4.0), layout="constrained")
    if title:
        figure.suptitle(title, fontsize="medium")
    FigureCanvasAgg(figure)                  # a renderer, to measure labels
    drawn = []
    for index, (xlabel, ylabel, points) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        cost_panel(axes, points, xlabel, ylabel)
        drawn.append((axes, points))
    handles = legend_handles([p for _, _, points in panels for p in points])
    if handles:
        figure.legend(handles=handles, loc="outside lower center", fontsize="small", frameon=False,
                      ncols=len(handles))
    place_labels(figure, drawn)
    return figure


def accuracy_vs_cost_figure(results: Sequence[MethodResults], agg: Aggregates, set_name: str = "test",
                            variant: str = "counterfactual") -> Figure:
    """Contextual EM (seed mean, interval) on one set and variant against trainable share and
    training-step memory, with the Pareto front of the converged methods on each."""
    colors = method_colors(results)
    panels = []
    for xlabel, cost in (
            ("trainable parameters (%)", lambda r: r.runs[0].train.params.trainable_pct),
            ("training-step memory, sum of parts (MiB)",
             lambda r: (run_mean(r, lambda run: run.train.cost.step_memory.sum_bytes) or 0) / _MIB)):
        points = []
        for r in results:
            bar, x = _bar(agg.accuracy.get((r.key, set_name, variant, "contextual_em"))), cost(r)
            if bar is None or not x or x <= 0:
                continue
            estimate, low, high = (value if value == value else bar[0] for value in bar[:3])  # no interval: none
            points.append(CostPoint(r.key, float(x), estimate, low, high, color=colors[r.key],
                                    converged=agg.convergence[r.key].converged, per_seed=bar[3]))
        panels.append((xlabel, f"contextual EM, {set_name} {variant} (%)", points))
    return cost_figure(panels, title=f"Contextual EM on {variant} {set_name} contexts against training cost")


def _seed_mean_curve(result: MethodResults, column: str) -> tuple[list[int], list[float]]:
    """The mean over seeds at the steps every seed logged."""
    per_seed = [{row.step: getattr(row, column) for row in run.curve if getattr(row, column) is not None}
                for run in result.runs]
    if not per_seed or not all(per_seed):
        return [], []
    steps = sorted(set.intersection(*(set(curve) for curve in per_seed)))
    return steps, [float(np.mean([curve[s] for curve in per_seed])) for s in steps]


def training_curves_figure(results: Sequence[MethodResults]) -> Figure:
    """Each seed as a thin line, the seed mean as a thick one, per method; one legend for both
    panels, outside them (inside, it covered the curves)."""
    figure = Figure(figsize=(10, 3.6), layout="constrained")
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
                    axes.plot(steps, values, color=colors[r.key], linewidth=0.6, alpha=0.45)
                    drawn = True
            steps, means = _seed_mean_curve(r, column)
            if steps:
                axes.plot(steps, means, marker="." if column == "val_loss" else None, label=r.key,
                          color=colors[r.key], linewidth=1.6)
        if not drawn:
            no_data(axes, "no training curves")
            continue
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
    handles = {line.get_label(): line for axes in (train_axes, val_axes) for line in axes.get_lines()
               if not line.get_label().startswith("_")}
    if handles:
        figure.legend(handles=list(handles.values()), title="seed mean", loc="outside right upper", fontsize="small")
    return figure


# File name (without .png) -> heading, shown above the figure in the report.
FIGURE_TITLES = {
    "contextual_em": "Contextual EM by method and context variant",
    "memorization_ratio": "Memorization ratio on counterfactual contexts",
    "accuracy_vs_cost": "Contextual EM against training cost",
    "training_curves": "Training and validation loss",
}

# File name (without .png) -> caption. The names are fixed so that the workflow can
# declare every plot as an output; a plot without data says so instead of being absent.
FIGURE_CAPTIONS = {
    "contextual_em": "Contextual exact match per method and context variant: seed means with 95 % t "
                     "intervals over seeds (error bars) and each seed's own EM (dots).",
    "memorization_ratio": "Memorization ratio M_R (%) on counterfactual contexts, unseen (test) vs seen "
                          "questions: pooled over seeds, with 95 % intervals (error bars) and each seed's own "
                          "ratio (dots).",
    "accuracy_vs_cost": "Contextual EM on counterfactual test contexts (seed mean, 95 % interval, each seed "
                        "as a dot beside it) against "
                        "trainable share and training-step memory (sum of parts). Ringed and joined by the "
                        "dashed step line: the Pareto front, the converged methods that no other converged "
                        "method beats on seed-mean EM or on cost without being worse on the other. The front "
                        "ignores the intervals: where they overlap, neighbours on it are not ranked.",
    "training_curves": "Training and validation loss per method: each seed thin, the seed mean thick.",
}


def build_figures(results: Sequence[MethodResults], agg: Aggregates) -> dict[str, Figure]:
    return {
        "contextual_em": contextual_em_figure(results, agg),
        "memorization_ratio": memorization_figure(results, agg),
        "accuracy_vs_cost": accuracy_vs_cost_figure(results, agg),
        "training_curves": training_curves_figure(results),
    }
