"""The accuracy-vs-cost figure: the Pareto front on hand-computed points, its step line and
rings, point labels that keep clear of each other, and PNG bytes that depend only on the data."""
from __future__ import annotations

import itertools

import pytest
from matplotlib.text import Annotation, Text

from cfqa.report import plots
from cfqa.report.pareto import dominates, pareto_front
from cfqa.report.plots import CostPoint

# (name, cost, accuracy): lower cost and higher accuracy are better.
POINTS = [
    ("cheap", 0.5, 40.0),       # cheapest of all: on the front
    ("a", 1.0, 50.0),           # on the front
    ("same_cost", 1.0, 45.0),   # a costs the same and is more accurate
    ("b", 2.0, 60.0),           # on the front
    ("b_twin", 2.0, 60.0),      # equal to b: neither dominates the other
    ("worse", 3.0, 55.0),       # b is cheaper and more accurate
    ("best", 4.0, 70.0),        # most accurate: on the front
    ("same_em", 5.0, 70.0),     # best is as accurate and cheaper
]


def test_front_keeps_exactly_the_non_dominated_points_by_cost():
    assert [name for name, _, _ in pareto_front(POINTS)] == ["cheap", "a", "b", "b_twin", "best"]


def test_front_of_reversed_input_is_the_same():
    assert pareto_front(POINTS[::-1]) == pareto_front(POINTS)


def test_dominance_needs_one_strict_improvement():
    assert dominates(("a", 1.0, 50.0), ("x", 1.0, 45.0))
    assert dominates(("a", 1.0, 50.0), ("x", 2.0, 50.0))
    assert not dominates(("a", 1.0, 50.0), ("x", 1.0, 50.0))
    assert not dominates(("a", 1.0, 50.0), ("x", 0.5, 40.0))


def test_single_point_and_empty_input():
    assert pareto_front([("only", 3.0, 10.0)]) == [("only", 3.0, 10.0)]
    assert pareto_front([]) == []


def test_non_finite_point_is_named():
    with pytest.raises(ValueError, match=r"Pareto point 'lost': expected finite cost and accuracy, got 1.0, nan"):
        pareto_front([("a", 1.0, 5.0), ("lost", 1.0, float("nan"))])


def _points(rows) -> list[CostPoint]:
    return [CostPoint(name, cost, accuracy, accuracy - 3, accuracy + 3, color=f"C{i}", converged=converged)
            for i, (name, cost, accuracy, converged) in enumerate(rows)]


# Five points close together on the plot plus one method that did not converge: cheapest and
# least accurate, it would be on the front if it were ranked.
CLUSTER = _points([("full", 100.0, 61.0, True), ("lora", 9.0, 58.0, True), ("ia3", 8.0, 57.0, True),
                   ("adapter", 10.0, 59.5, True), ("prefix_decoder", 9.5, 56.0, True),
                   ("stalled", 0.5, 1.0, False)])


def _figure():
    return plots.cost_figure([("trainable parameters (%)", "contextual EM (%)", CLUSTER)])


def test_step_line_and_rings_follow_the_front_of_converged_points():
    axes = _figure().axes[0]
    front = pareto_front([(p.method, p.cost, p.accuracy) for p in CLUSTER if p.converged])
    assert [name for name, _, _ in front] == ["ia3", "lora", "adapter", "full"]
    lines = {line.get_gid(): line for line in axes.get_lines() if line.get_gid()}
    step, rings = lines["pareto-step"], lines["pareto-rings"]
    # A post step line: each point's EM holds until the next point's cost.
    assert list(step.get_xdata()) == [8.0, 9.0, 10.0, 100.0]
    assert list(step.get_ydata()) == [57.0, 58.0, 59.5, 61.0]
    assert step.get_drawstyle() == "steps-post"
    assert list(rings.get_xdata()) == [8.0, 9.0, 10.0, 100.0]
    legend = axes.figure.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == [plots.FRONT_LABEL, plots.NOT_CONVERGED_LABEL]
    # The method that did not converge has an open marker, the others filled ones.
    faces = {line.get_xdata()[0]: line.get_markerfacecolor() for line in axes.get_lines()
             if line.get_marker() == "o" and not line.get_gid()}
    assert faces[0.5] == "white" and all(face != "white" for cost, face in faces.items() if cost != 0.5)


def test_labels_do_not_overlap_each_other_and_stay_in_the_axes():
    figure = _figure()
    assert plots.png_bytes(figure).startswith(b"\x89PNG")
    figure.draw_without_rendering()        # positions at the figure's own dpi again (saved at 110)
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    # The text's own box (an Annotation's extent includes its leader line).
    labels = {a.get_text(): Text.get_window_extent(a, renderer) for a in axes.texts if isinstance(a, Annotation)}
    assert sorted(labels) == sorted(p.method for p in CLUSTER)
    for (name_a, a), (name_b, b) in itertools.combinations(labels.items(), 2):
        assert not a.overlaps(b), (name_a, name_b)
    frame = axes.get_window_extent(renderer)
    assert all(frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
               for box in labels.values())


def test_png_depends_only_on_the_points():
    assert plots.png_bytes(_figure()) == plots.png_bytes(_figure())


def test_cost_axis_is_log_over_a_decade_and_linear_below():
    figure = plots.cost_figure([("x", "y", CLUSTER), ("memory", "y", _points([("a", 3.7, 8.0, True),
                                                                             ("b", 4.9, 61.0, True)]))])
    wide, narrow = figure.axes
    assert wide.get_xscale() == "log" and narrow.get_xscale() == "linear"
    # Room below the lowest interval, cut 3 points below 0: EM is never negative.
    assert narrow.get_ylim() == (-3.0, pytest.approx(61.0 + 3 + 0.2 * (64.0 - 5.0)))


def test_panel_without_points_says_so():
    figure = plots.cost_figure([("x", "y", [])])
    assert [t.get_text() for t in figure.axes[0].texts] == ["no data"]
    assert not figure.legends
