"""The report's lead (fast, on synthetic comparisons): the headline figure draws exactly the
comparison table's decisions — each point the paired difference, each bar the interval at its
Holm level (not the unadjusted 95 % one), a filled marker exactly where `significant` holds,
each seed's difference as a dot — one panel per variant with the primary endpoint's marked; the
glossary reads the registry's descriptions; measured costs carry seed intervals; every figure
is headed, the headline comes before the contents; the workflow declares every figure."""
from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from cfqa.analysis import statistics
from cfqa.config import PrimaryEndpoint
from cfqa.dag.table import REPORT_FIGURES
from cfqa.methods.registry import METHOD_NAMES, get_method
from cfqa.methods.options import METHOD_DESCRIPTIONS
from cfqa.report import formatting as fmt
from cfqa.report import plots
from cfqa.report.aggregate import Comparison
from cfqa.report.document import FigureRef, ReportDocument, Section
from cfqa.report.figures import FIGURE_NAMES
from cfqa.report.headline import HEADLINE, POINT, Headline, HeadlineRow, headline_caption, headline_figure
from cfqa.report.render import render_html, render_markdown
from cfqa.report.tables import measured_cell

VARIANTS = ("factual", "counterfactual", "empty", "random")
METHODS = ("lora", "prompt", "stalled")
COLORS = {"lora": "C1", "prompt": "C2", "stalled": "C3"}


def _scores(rng, seeds: int, accuracy: float, seed_sd: float, questions: int = 150) -> np.ndarray:
    per_seed = np.clip(rng.normal(accuracy, seed_sd, (seeds, 1)), 0, 1)
    return (rng.random((seeds, questions)) < per_seed).astype(float)


@pytest.fixture(scope="module")
def answer() -> Headline:
    """lora far below full on counterfactual contexts (significant), prompt close to it
    everywhere (not), `stalled` excluded; Holm over the 8 differences, as one table's family."""
    rng = np.random.default_rng(7)
    full = {v: _scores(rng, 6, 0.6, 0.02) for v in VARIANTS}
    shifts = {"lora": {"counterfactual": -0.35}, "prompt": {}}
    candidates = [(m, v, statistics.paired_difference(_scores(rng, 6, 0.6 + shifts[m].get(v, 0.0), 0.02), full[v]))
                  for m in ("lora", "prompt") for v in VARIANTS]
    decisions = statistics.decide([d for _, _, d in candidates])
    cells = {(m, v): Comparison(method=m, set="test", variant=v, metric="contextual_em", answer_type=None,
                                decision=decision)
             for (m, v, _), decision in zip(candidates, decisions)}
    rows = [HeadlineRow(method=m, color=COLORS[m], cells=tuple(cells[(m, v)] for v in VARIANTS))
            for m in ("lora", "prompt")]
    excluded = tuple(Comparison(method="stalled", set="test", variant=v, metric="contextual_em", answer_type=None,
                                decision=None, excluded="not converged: not compared") for v in VARIANTS)
    rows.append(HeadlineRow(method="stalled", color=COLORS["stalled"], cells=excluded))
    return Headline(endpoint=PrimaryEndpoint(), variants=VARIANTS, rows=tuple(rows), reference="`full`",
                    family_size=len(decisions))


def _drawn(axes) -> dict[int, dict]:
    """Per row (y): the marker's x, face colour and the bar's ends, from the error bars."""
    found = {}
    for container in axes.containers:
        assert isinstance(container, ErrorbarContainer)
        line, _, bars = container.lines
        assert line.get_gid() == POINT
        (x,), (y,) = line.get_xdata(), line.get_ydata()
        ends = None
        if bars:
            (segment,) = bars[0].get_segments()
            ends = (segment[0][0], segment[1][0])
        found[int(y)] = {"x": x, "face": line.get_markerfacecolor(), "color": line.get_color(), "ends": ends}
    return found


def test_each_point_and_bar_is_the_tables_decision(answer):
    figure = headline_figure(answer)
    panels = figure.axes
    assert [a.get_title() for a in panels] == ["factual", "counterfactual (primary endpoint)", "empty", "random"]
    assert [t.get_text() for t in panels[0].get_yticklabels()] == list(METHODS)
    significant = 0
    for index, axes in enumerate(panels):
        drawn = _drawn(axes)
        assert sorted(drawn) == [0, 1]                  # `stalled` has no point
        for y, row in enumerate(answer.rows[:2]):
            comparison = row.cells[index]
            d = comparison.difference
            assert drawn[y]["x"] == d.difference
            assert drawn[y]["ends"] == pytest.approx((d.low, d.high), abs=1e-9)
            assert drawn[y]["face"] == (row.color if comparison.significant else "white")
            assert drawn[y]["color"] == row.color
            significant += comparison.significant
            # The interval is the Holm-level one, never the unadjusted 95 % interval where Holm adjusted p.
            raw = d.at_level(0.95)
            assert d.confidence >= 0.95 and d.high - d.low >= raw.high - raw.low - 1e-12
            assert (d.confidence > 0.95) == (comparison.holm_p > d.p_value)
            assert (d.low > 0 or d.high < 0) == comparison.significant
        assert [t.get_text() for t in axes.texts] == ["not converged: not compared"]
        assert any(line.get_xdata()[0] == 0.0 for line in axes.get_lines() if line.get_gid() is None)
    assert significant == 1                             # lora on counterfactual contexts only
    assert not _drawn(panels[1])[0]["face"] == "white"


def test_every_seed_is_a_dot_below_its_point(answer):
    figure = headline_figure(answer)
    for index, axes in enumerate(figure.axes):
        (dots,) = [line for line in axes.get_lines() if line.get_gid() == plots.SEED_DOTS]
        expected = [v for row in answer.rows[:2] for v in row.cells[index].difference.per_seed]
        assert list(dots.get_xdata()) == expected
        assert list(dots.get_ydata()) == [y for y in (0, 1) for _ in range(6)]


def test_legend_is_outside_the_panels_and_the_caption_names_the_family(answer):
    figure = headline_figure(answer)
    assert plots.png_bytes(figure).startswith(b"\x89PNG")
    (legend,) = figure.legends
    renderer = figure.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    assert all(not box.overlaps(axes.get_window_extent(renderer)) for axes in figure.axes)
    caption = headline_caption(answer)
    assert f"its {answer.family_size} comparisons" in caption and "counterfactual panel" in caption


def test_one_seed_has_a_point_and_no_bar():
    difference = statistics.paired_difference([[1, 0, 1, 1]], [[0, 0, 1, 0]])
    (decision,) = statistics.decide([difference])
    assert math.isnan(decision.difference.low) and not decision.significant
    cell = Comparison(method="lora", set="test", variant="factual", metric="contextual_em", answer_type=None,
                      decision=decision)
    one = Headline(endpoint=PrimaryEndpoint(), variants=("factual",),
                   rows=(HeadlineRow(method="lora", color="C1", cells=(cell,)),), reference="`full`", family_size=0)
    drawn = _drawn(headline_figure(one).axes[0])
    assert drawn[0]["x"] == pytest.approx(50.0) and drawn[0]["ends"] is None and drawn[0]["face"] == "white"


def test_nothing_compared_says_so():
    empty = Headline(endpoint=PrimaryEndpoint(), variants=VARIANTS, rows=(), reference="full fine-tuning",
                     family_size=0)
    figure = headline_figure(empty)
    assert [t.get_text() for t in figure.axes[0].texts] == ["no method compared with full fine-tuning"]
    assert "No method is compared" in headline_caption(empty)


def test_every_registry_method_has_its_description_in_one_place():
    assert set(METHOD_DESCRIPTIONS) == set(METHOD_NAMES)
    assert all(10 < len(text) < 120 for text in METHOD_DESCRIPTIONS.values())
    assert get_method("full").description == METHOD_DESCRIPTIONS["full"]


def test_measured_cells_have_seed_intervals_where_seeds_differ():
    interval = statistics.seed_interval([1.0, 1.2, 1.4])
    # t on 2 degrees of freedom: 1.2 ± 4.303 · 0.2 / √3
    assert (interval.low, interval.high) == pytest.approx((1.2 - 4.3027 * 0.2 / 3 ** 0.5,
                                                           1.2 + 4.3027 * 0.2 / 3 ** 0.5), abs=1e-4)
    assert measured_cell([1.0, 1.2, 1.4], fmt.seconds) == \
        f"1.2 s [{fmt.seconds(interval.low)}, {fmt.seconds(interval.high)}]"
    assert measured_cell([2048, 2048, 2048], fmt.bytes_size) == "2.0 KiB"      # the same for every seed
    assert measured_cell([0.25, None], fmt.seconds) == "250 ms"                 # one seed measured it
    assert measured_cell([None, None], fmt.seconds) == fmt.MISSING
    # Costs are never negative: a wide interval is cut at 0.
    assert statistics.seed_interval([0.1, 5.0]).low == 0.0


def test_the_workflow_declares_every_figure_the_report_draws():
    assert FIGURE_NAMES[0] == HEADLINE
    assert tuple(REPORT_FIGURES) == FIGURE_NAMES


def test_figures_are_headed_and_the_answer_comes_before_the_contents():
    document = ReportDocument(title="T", sections=(
        Section(title="At a glance", figures=(FigureRef(name="a", title="The answer", caption="What it shows."),)),
        Section(title="Overview", paragraphs=("text",)),
        Section(title="More", figures=(FigureRef(name="b", title="Second figure", caption="Its caption."),)),
    ))
    page = render_html(document, {"a": b"\x89PNG", "b": b"\x89PNG"})
    assert page.index('id="figure-a"') < page.index("<nav>") < page.index('id="overview"')
    for name, title in (("a", "The answer"), ("b", "Second figure")):
        figure = page.split(f'<figure id="figure-{name}">', 1)[1].split("</figure>", 1)[0]
        assert f'<h3 class="figure-title">{title}</h3>' in figure and "<figcaption" in figure
    markdown = render_markdown(document)
    assert "### The answer\n\n![The answer](a.png)\n\n_What it shows._" in markdown
    assert "### Second figure\n\n![Second figure](b.png)\n\n_Its caption._" in markdown
