"""Whether each method learned to start its answers in the output format, from train.json's
first-target-token probe (cfqa.training.first_token): the marker's rank among the vocabulary
at the first answer position before and after training, beside the share of well-formed
generations. A method whose marker is still far from the top after training cannot produce the
format by greedy decoding, whatever it learned about the answers."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from cfqa.report import formatting as fmt
from cfqa.report.aggregate import CONVERGED_WELL_FORMED_PCT, Aggregates
from cfqa.report.inputs import MethodResults
from cfqa.report.tables import Table, method_cells, method_headers


def _probes(result: MethodResults) -> list:
    return [run.train.first_target_token for run in result.runs if run.train.first_target_token is not None]


def first_token_table(results: Sequence[MethodResults], agg: Aggregates) -> Table | None:
    """One row per method with a probe in its train.json; None when no run has one."""
    rows = []
    for r in results:
        probes = _probes(r)
        if not probes:
            continue
        rows.append((*method_cells(r), fmt.text(probes[0].token),
                     fmt.count(int(np.median([p.rank_median_before for p in probes]))),
                     fmt.count(int(np.median([p.rank_median_after for p in probes]))),
                     fmt.percent(np.mean([p.probability_after_pct for p in probes])),
                     fmt.percent(np.mean([p.top1_after_pct for p in probes])),
                     fmt.percent(agg.convergence[r.key].mean_pct)))
    if not rows:
        return None
    vocabulary = max(p.vocabulary for r in results for p in _probes(r))
    return Table(
        key="first-token",
        title="Output format: the first answer token",
        headers=(*method_headers(results), "first target token", "rank before training", "rank after",
                 "probability after (%)", "top-1 after (%)", "well-formed on factual test (%)"),
        rows=tuple(rows),
        caption=f"Teacher-forced on the validation examples: the rank of the targets' first token (the format "
                f"marker) among the {vocabulary} tokens at the first answer position (0: the most likely; median "
                "over examples, then over seeds), its mean probability and how often it is the most likely. "
                "Greedy decoding starts an answer in the format only where the marker is the most likely token.",
    )


def stalled_reasons(results: Sequence[MethodResults], agg: Aggregates) -> tuple[str, ...]:
    """One sentence per method that did not converge, with its marker's measured rank."""
    sentences = []
    for r in results:
        probes = _probes(r)
        if agg.convergence[r.key].converged or not probes:
            continue
        before = int(np.median([p.rank_median_before for p in probes]))
        after = int(np.median([p.rank_median_after for p in probes]))
        probability = float(np.mean([p.probability_after_pct for p in probes]))
        sentences.append(
            f"`{r.name}`: after training the format marker {probes[0].token} is still token {after} of "
            f"{probes[0].vocabulary} at the first answer position (rank {before} before training; mean "
            f"probability {probability:.1f} %), so greedy decoding rarely starts in the format (well-formed "
            f"{fmt.percent(agg.convergence[r.key].mean_pct)} %, threshold {CONVERGED_WELL_FORMED_PCT:.0f} %).")
    return tuple(sentences)


def with_first_token(section, results: Sequence[MethodResults], agg: Aggregates):
    """The report's Convergence section with the probe's reasons and table added."""
    table = first_token_table(results, agg)
    return dataclasses.replace(section, paragraphs=section.paragraphs + stalled_reasons(results, agg),
                               tables=section.tables + ((table,) if table else ()))
