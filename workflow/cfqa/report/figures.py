"""Every figure of the report by file name, in the order of the page: the headline figure
first (headline.py), then the descriptive ones (plots.py)."""
from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from cfqa.config import PrimaryEndpoint
from cfqa.report import plots
from cfqa.report.aggregate import Aggregates
from cfqa.report.headline import HEADLINE, headline, headline_figure
from cfqa.report.inputs import MethodResults

# The workflow declares one reports/<name>.png per name (cfqa.dag.table.REPORT_FIGURES).
FIGURE_NAMES = (HEADLINE, *plots.FIGURE_CAPTIONS)


def build_figures(results: Sequence[MethodResults], agg: Aggregates,
                  endpoint: PrimaryEndpoint = PrimaryEndpoint()) -> dict[str, Figure]:
    return {HEADLINE: headline_figure(headline(results, agg, endpoint)), **plots.build_figures(results, agg)}
