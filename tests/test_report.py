"""The report stage on real result files (the stages run on the tiny configuration for two
methods and two seeds, plus a method trained for one step that does not converge): every
table cell is the statistics module's result on arrays rebuilt here from the predictions
files, comparisons with full fine-tuning are decided by Holm over each table's declared family
with one predicate (marks and intervals agree), the primary endpoint states what the run can
resolve, the memorization ratio is one unit everywhere (pooled and on known questions), every
mean in the figures has its seeds as dots, the report is byte-identical on a rerun, the HTML is
self-contained and summary.json has the key metrics with their intervals."""
from __future__ import annotations

import base64
import json
import re
import shutil
import time

import numpy as np
import pytest
import yaml

from cfqa import config as config_module
from cfqa.analysis import statistics
from cfqa.scoring.answer_metrics import exact_match, memorization_class
from cfqa.scoring import metrics as metric_registry
from cfqa.contract import (ResultsError, read_curve, read_data_stats, read_lr_selection, read_metrics,
                           read_predictions, read_question_scores, read_summary, read_train_record,
                           write_question_scores)
from cfqa.layout import RunLayout
from cfqa.report import aggregate as aggregate_module
from cfqa.report import formatting as fmt
from cfqa.methods.options import METHOD_DESCRIPTIONS
from cfqa.report import plots
from cfqa.report.aggregate import CONVERGED_WELL_FORMED_PCT, aggregate
from cfqa.report.document import build_document
from cfqa.report.figures import FIGURE_NAMES, build_figures
from cfqa.report.headline import HEADLINE, POINT
from cfqa.report.inputs import load_results
from cfqa.report.mixtures import mixture_label
from cfqa.report.render import render_html, render_markdown
from cfqa.report.tables import mapping_table, measured_cell
from cfqa.stages import report as report_stage
from stage_results import run_stage, working_directory

pytestmark = pytest.mark.slow   # the stages run once per session (stage_results fixture)

VARIANTS = ("factual", "counterfactual", "empty", "random")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STALLED = "stalled"             # trained for one step: does not learn the output format
# stage_results trains on factual + counterfactual; this run of full fine-tuning adds answerability.
WITH_A = "full_fcfa"
EXTRA_METHODS = {STALLED: {"method": "lora", "train": {"max_steps": 1, "eval_every": 1}},
                 WITH_A: {"method": "full", "train": {"mixture": ["factual", "counterfactual", "empty", "random"]}}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, stage_results):
    """stage_results' data, backbones and runs, plus `stalled` (LoRA, one training step) and
    `full_fcfa` (full fine-tuning with answerability) for every seed, trained and evaluated by
    the real stages."""
    root = tmp_path_factory.mktemp("report-runs")
    for part in ("data", "results", "models/base", "models/base_lm"):
        shutil.copytree(stage_results.root / part, root / part)
    extra = root / "stalled.yaml"
    extra.write_text(yaml.safe_dump({"methods": EXTRA_METHODS}, sort_keys=False))
    params = [stage_results.params, extra]
    with working_directory(root):
        for method in EXTRA_METHODS:
            for seed in stage_results.seeds:
                # Trained at the configured rate: no tune job for these methods.
                run_stage("train", params, ("lr-selection",), method=method, seed=seed)
                run_stage("evaluate", params, method=method, seed=seed)
    methods = (*stage_results.methods, *EXTRA_METHODS)
    return {"root": root, "params": params, "methods": methods, "seeds": stage_results.seeds,
            "results": root / "results", "data_stats": root / "data" / "stats.json"}


@pytest.fixture(scope="module")
def cfg(runs) -> config_module.Config:
    return config_module.load(runs["params"])


@pytest.fixture(scope="module")
def report(tmp_path_factory, runs, cfg) -> dict:
    """One run of the stage, shared by the tests that read its outputs."""
    root = tmp_path_factory.mktemp("report")
    paths = {"results": runs["results"], "data_stats": runs["data_stats"], "out": root / "reports",
             "summary": root / "summary.json"}
    started = time.perf_counter()
    report_stage.run(cfg, **paths)
    return {**paths, "methods": runs["methods"], "seeds": runs["seeds"], "seconds": time.perf_counter() - started}


# ---- arrays rebuilt here from the predictions files -----------------------------------------

def _predictions(report, method, seed):
    return read_predictions(report["results"] / method / f"seed{seed}" / "predictions.jsonl")


@pytest.fixture(scope="module")
def rebuilt(report) -> dict:
    """(method, set, variant) -> {"ids", "types", "contextual", "parametric"} and
    (method, set) -> (is_original, is_substitute), seeds × questions; columns in the order of
    the first method's first seed (the report's order: bootstrap draws are per column)."""
    first = _predictions(report, report["methods"][0], report["seeds"][0])
    order: dict[tuple[str, str], list] = {}
    for row in first:
        order.setdefault((row.set, row.variant), []).append(row)
    arrays = {}
    for method in report["methods"]:
        by_seed = [{(r.set, r.variant, r.id): r for r in _predictions(report, method, seed)} for seed in report["seeds"]]
        for (set_name, variant), reference_rows in order.items():
            rows = [[rows_of[(set_name, variant, r.id)] for r in reference_rows] for rows_of in by_seed]
            arrays[(method, set_name, variant)] = {
                "types": np.array([r.answer_type or "untyped" for r in reference_rows]),
                "contextual": np.array([[exact_match(r.contextual, r.gold_contextual) for r in seed_rows]
                                        for seed_rows in rows], dtype=float),
                "parametric": np.array([[exact_match(r.parametric or "", r.gold_parametric) for r in seed_rows]
                                        for seed_rows in rows], dtype=float)
                if any(r.parametric is not None for seed_rows in rows for r in seed_rows) else None,
            }
            if variant == "counterfactual":
                classes = np.array([[memorization_class(r.contextual, r.gold_parametric, r.substitute)
                                     for r in seed_rows if r.substitute] for seed_rows in rows])
                arrays[(method, set_name)] = ((classes == "original").astype(float),
                                              (classes == "substitute").astype(float))
                # Per seed: was the factual version of each of these questions answered correctly?
                arrays[(method, set_name, "known")] = np.array(
                    [[float(exact_match(rows_of[(set_name, "factual", r.id)].contextual,
                                        rows_of[(set_name, "factual", r.id)].gold_contextual))
                      for r in seed_rows if r.substitute] for seed_rows, rows_of in zip(rows, by_seed)])
    return arrays


def _interval_text(interval) -> str:
    return fmt.interval(interval.estimate, interval.low, interval.high)


def markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Every `### title` followed by a pipe table, as rows keyed by header."""
    tables = {}
    for block in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        title, *lines = block.splitlines()
        table_lines = [line for line in lines if line.startswith("|")]
        if not table_lines:
            continue
        split = lambda line: [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        headers = split(table_lines[0])
        tables[title.strip()] = [dict(zip(headers, split(line))) for line in table_lines[2:]]
    return tables


def _row(rows: list[dict[str, str]], **match: str) -> dict[str, str]:
    found = [row for row in rows if all(row.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one row with {match}, got {found}"
    return found[0]


def _text(report) -> str:
    return (report["out"] / "report.md").read_text()


def _tables(report) -> dict[str, list[dict[str, str]]]:
    return markdown_tables(_text(report))


def _metrics(report, method, seed):
    return read_metrics(report["results"] / method / f"seed{seed}" / "metrics.json", method)


def _train(report, method, seed):
    return read_train_record(report["results"] / method / f"seed{seed}" / "train.json", method)


# ---- accuracy -------------------------------------------------------------------------------

def test_accuracy_cells_are_intervals_over_the_predictions(report, rebuilt):
    tables = _tables(report)
    for set_name in ("test", "seen"):
        rows = tables[f"Accuracy on `{set_name}` by method and context variant"]
        assert len(rows) == len(report["methods"]) * len(VARIANTS)
        for method in report["methods"]:
            for variant in VARIANTS:
                arrays = rebuilt[(method, set_name, variant)]
                row = _row(rows, method=method, variant=variant)
                contextual = statistics.mean_interval(arrays["contextual"])
                assert row["contextual EM (%)"] == _interval_text(contextual)
                assert row["seeds"] == str(len(report["seeds"])) == str(contextual.n_seeds)
                assert row["questions"] == fmt.count(arrays["contextual"].shape[1])
                if arrays["parametric"] is None:
                    assert row["parametric EM (%)"] == fmt.MISSING
                else:
                    assert row["parametric EM (%)"] == _interval_text(
                        statistics.mean_interval(arrays["parametric"]))
                # Each seed's row of the array is the EM the evaluate stage wrote for that run.
                for seed, scores in zip(report["seeds"], arrays["contextual"]):
                    cell = _metrics(report, method, seed).sets[set_name][variant]
                    assert 100 * scores.mean() == pytest.approx(cell["contextual_em_pct"])


def test_by_type_cells_are_intervals_over_the_type_columns(report, rebuilt):
    rows = _tables(report)["Accuracy on `test` by answer type"]
    for method in report["methods"]:
        arrays = rebuilt[(method, "test", "factual")]
        types = sorted(set(arrays["types"]))
        assert [r["answer type"] for r in rows if r["method"] == method] == types + ["all"]
        for answer_type in types:
            row = _row(rows, method=method, **{"answer type": answer_type})
            columns = arrays["types"] == answer_type
            assert row["factual contextual EM (%)"] == _interval_text(
                statistics.mean_interval(arrays["contextual"][:, columns]))
            baseline = np.mean([_metrics(report, method, s).most_frequent_em_pct["test"][answer_type]
                                for s in report["seeds"]])
            assert row["most-frequent EM (%)"] == fmt.percent(baseline)
        overall = _row(rows, method=method, **{"answer type": "all"})
        assert overall["factual contextual EM (%)"] == _interval_text(
            statistics.mean_interval(arrays["contextual"]))


# ---- comparisons with full fine-tuning ---------------------------------------------------------

def _mark(decision) -> str:
    if decision.significant:
        return "higher" if decision.difference.difference > 0 else "lower"
    return "n.s."


def _excludes_zero(cell: str) -> bool:
    """A shown interval '+3.2 [-1.0, +7.5]' excludes 0."""
    low, high = (float(v) for v in re.search(r"\[([^,]+), ([^\]]+)\]", cell).groups())
    return low > 0 or high < 0


def test_paired_differences_decided_by_holm_over_each_table(report, rebuilt):
    """One family per table: every converged method, variant and metric of one question set,
    Holm over them; each interval at its Holm level, so the mark and the interval agree."""
    tables = _tables(report)
    agg = aggregate(load_results(report["results"], report["methods"], report["seeds"]))
    family = [m for m in report["methods"] if m != "full" and agg.convergence[m].converged]
    assert "lora" in family and STALLED not in family
    marks = []
    for set_name in ("test", "seen"):
        rows = tables[f"Each method minus `full` on `{set_name}` (paired by seed and question)"]
        keys, differences = [], []
        for method in family:
            for variant in VARIANTS:
                for metric, array_key in (("contextual EM", "contextual"), ("parametric EM", "parametric")):
                    keys.append((method, variant, metric))
                    differences.append(statistics.paired_difference(rebuilt[(method, set_name, variant)][array_key],
                                                                    rebuilt[("full", set_name, variant)][array_key]))
        decisions = dict(zip(keys, statistics.decide(differences)))
        for (method, variant, metric), decision in decisions.items():
            row = _row(rows, method=method, variant=variant)
            d = decision.difference
            assert row[f"Δ {metric} (pp)"] == fmt.signed_interval(d.difference, d.low, d.high)
            assert row[f"{metric} Holm p"] == fmt.p_value(decision.holm_p)
            assert row[f"{metric} vs `full`"] == _mark(decision)
            # The one predicate: marked higher or lower exactly where the shown interval excludes 0.
            if not np.isnan(d.low) and d.standard_error > 0:
                assert _excludes_zero(row[f"Δ {metric} (pp)"]) == (row[f"{metric} vs `full`"] != "n.s.")
            marks.append(row[f"{metric} vs `full`"])
        for variant in VARIANTS:
            stalled = _row(rows, method=STALLED, variant=variant)
            assert stalled["contextual EM vs `full`"] == "not converged: not compared"
            assert stalled["Δ contextual EM (pp)"] == fmt.MISSING
    # Contextual EM on empty contexts is 0 for both (neither was trained on them): no spread, no
    # difference, left out of the family (adjusted p 1).
    assert "n.s." in marks
    assert _row(tables["Each method minus `full` on `test` (paired by seed and question)"],
                method="lora", variant="empty")["contextual EM Holm p"] == "1"
    caption = _text(report).split("### Each method minus `full` on `test`", 1)[1].split("\n### ", 1)[0]
    assert "One declared family: every method, variant and metric of this table" in caption


def test_holm_runs_over_the_whole_table(runs, monkeypatch):
    """With every method counted as converged, the family of a set's table holds every method,
    variant and metric with a spread."""
    monkeypatch.setattr(aggregate_module, "CONVERGED_WELL_FORMED_PCT", -1.0)
    results = load_results(runs["results"], runs["methods"], runs["seeds"])
    agg = aggregate(results)
    for set_name in ("test", "seen"):
        family = [c for c in agg.comparisons if c.set == set_name and c.decision is not None]
        assert {c.method for c in family} == {"lora", STALLED, WITH_A}
        tested = [c for c in family if not (c.difference.standard_error == 0 and c.difference.difference == 0)]
        assert {c.decision.family_size for c in family} == {len(tested)} and len(tested) >= 8
        adjusted = statistics.holm_adjust([c.difference.p_value for c in tested])
        assert [c.holm_p for c in tested] == pytest.approx(adjusted.tolist())
        for c in tested:
            assert c.significant == (c.holm_p < 0.05) == (c.difference.low > 0 or c.difference.high < 0)


def test_type_comparisons_are_one_family_per_table(report, rebuilt):
    rows = _tables(report)["Factual contextual EM by answer type on `test`: each method minus `full`"]
    agg = aggregate(load_results(report["results"], report["methods"], report["seeds"]))
    family = [m for m in report["methods"] if m != "full" and agg.convergence[m].converged]
    reference = rebuilt[("full", "test", "factual")]
    keys, differences = [], []
    for answer_type in sorted(set(reference["types"])):
        columns = reference["types"] == answer_type
        for method in family:
            keys.append((method, answer_type))
            differences.append(statistics.paired_difference(
                rebuilt[(method, "test", "factual")]["contextual"][:, columns], reference["contextual"][:, columns]))
    for (method, answer_type), decision in zip(keys, statistics.decide(differences)):
        row = _row(rows, method=method, **{"answer type": answer_type})
        assert row["Holm p"] == fmt.p_value(decision.holm_p)
        assert row["vs `full`"] == _mark(decision)
    for answer_type in sorted(set(reference["types"])):
        assert _row(rows, method=STALLED, **{"answer type": answer_type})["vs `full`"] == "not converged: not compared"


# ---- what the run can resolve -------------------------------------------------------------------

def test_primary_endpoint_states_what_the_run_can_resolve(report, rebuilt, cfg):
    """Counterfactual contextual EM on `test` (params report.primary_endpoint): each converged
    method minus full, Holm over them, the detectable difference at 80 % power at α / m from the
    comparison's own standard error, the seeds a 10- and a 5-point difference need, a verdict."""
    assert (cfg.report.primary_endpoint.set, cfg.report.primary_endpoint.variant,
            cfg.report.primary_endpoint.metric) == ("test", "counterfactual", "contextual_em")
    text = _text(report)
    section = text.split("## What this run can resolve", 1)[1].split("\n## ", 1)[0]
    rows = markdown_tables(section)[
        "Primary endpoint: contextual EM on counterfactual `test` contexts, each method minus full fine-tuning"]
    agg = aggregate(load_results(report["results"], report["methods"], report["seeds"]))
    family = [m for m in report["methods"] if m != "full" and agg.convergence[m].converged]
    reference = rebuilt[("full", "test", "counterfactual")]["contextual"]
    decisions = statistics.decide([statistics.paired_difference(rebuilt[(m, "test", "counterfactual")]["contextual"],
                                                                reference) for m in family])
    detectable = []
    for method, decision in zip(family, decisions):
        row = _row(rows, method=method)
        d = decision.difference
        mde = statistics.minimum_detectable_difference(d.standard_error, len(report["seeds"]) - 1, tests=len(family))
        detectable.append(mde)
        assert row["Δ (pp)"] == fmt.signed_interval(d.difference, d.low, d.high)
        assert row["Holm p"] == fmt.p_value(decision.holm_p)
        assert row["detectable at 80 % power (pp)"] == fmt.percent(mde)
        seed_sd = d.seed_se * np.sqrt(d.n_seeds)
        for target in (10, 5):
            needed = statistics.seeds_needed(target, seed_sd=seed_sd, question_se=d.question_se, tests=len(family))
            assert row[f"seeds for {target} pp"] == ("more than 1,000" if needed is None else fmt.count(needed))
        if decision.significant:
            expected = "higher" if d.difference > 0 else "lower"
        elif mde < 100 and -mde < d.low and d.high < mde:
            expected = "smaller than detectable"
        else:
            expected = "not resolved"      # including nothing detectable: mde beyond 100 points
        assert row["verdict"] == expected
    assert _row(rows, method=STALLED)["verdict"] == "not converged: not compared"
    median = float(np.median(detectable))
    assert f"this run detects a difference from full fine-tuning of {fmt.percent(median)} pp" in section
    assert "Everything else in this report is descriptive" in section


# ---- memorization ratio -----------------------------------------------------------------------

def test_memorization_ratio_is_one_unit_everywhere(report, rebuilt):
    """M_R = p_o / (p_o + p_s) of the same row's pooled counts, in percent, in the table, the
    figure and the summary; on known questions from the same classes restricted to the cells
    whose factual version the run answered correctly; seen − test by Holm over the methods."""
    rows = _tables(report)["Memorization on counterfactual contexts"]
    summary = read_summary(report["summary"]).methods
    checked = known_checked = 0
    differences = {}
    for method in report["methods"]:
        row = _row(rows, method=method)
        for set_name in ("test", "seen"):
            original, substitute = rebuilt[(method, set_name)]
            interval = statistics.ratio_interval(original, substitute)
            known = rebuilt[(method, set_name, "known")]
            known_interval = statistics.ratio_interval(original * known, substitute * known)
            if (original * known).sum() + (substitute * known).sum() == 0:
                assert row[f"M_R {set_name}, known (%)"] == fmt.MISSING
            else:
                assert row[f"M_R {set_name}, known (%)"] == _interval_text(known_interval)
                known_checked += 1
            assert row[f"known {set_name} (%)"] == fmt.percent(100 * known.mean())
            if original.sum() + substitute.sum() == 0:
                assert row[f"M_R {set_name}, all (%)"] == fmt.MISSING
                continue
            assert row[f"M_R {set_name}, all (%)"] == _interval_text(interval)
            p_o, p_s = float(row[f"p_o {set_name} (%)"]), float(row[f"p_s {set_name} (%)"])
            assert row[f"p_o {set_name} (%)"] == fmt.percent(100 * original.mean())
            assert row[f"p_s {set_name} (%)"] == fmt.percent(100 * substitute.mean())
            # The shares are shown to 0.1: M_R lies within what the shown shares allow.
            bounds = [100 * (p_o + a) / (p_o + a + p_s + b) for a in (-0.05, 0.05) for b in (-0.05, 0.05)]
            assert min(bounds) <= interval.estimate <= max(bounds)
            assert interval.estimate == pytest.approx(100 * original.sum() / (original.sum() + substitute.sum()))
            assert summary[method][f"{set_name}_memorization_ratio_pct"] == interval.estimate
            assert summary[method][f"{set_name}_memorization_ratio_pct_low"] == interval.low
            checked += 1
        seen, test = rebuilt[(method, "seen")], rebuilt[(method, "test")]
        if min(seen[0].sum() + seen[1].sum(), test[0].sum() + test[1].sum()) > 0:
            differences[method] = statistics.unpaired_ratio_difference(*seen, *test)
    for (method, raw), decision in zip(differences.items(), statistics.decide(list(differences.values()))):
        d = decision.difference
        row = _row(rows, method=method)
        assert row["M_R seen − test, all (pp)"] == fmt.signed_interval(d.difference, d.low, d.high)
        assert row["seen − test Holm p"] == fmt.p_value(decision.holm_p)
    assert checked > 0 and known_checked > 0
    assert "Longpre et al. (2021) measure M_R on those" in _text(report)
    results = load_results(report["results"], report["methods"], report["seeds"])
    agg = aggregate(results)
    axes = plots.memorization_figure(results, agg).axes[0]
    assert axes.get_ylim() == (0, 100) and "%" in axes.get_ylabel()
    heights = sorted(round(bar.get_height(), 6) for bar in axes.patches if bar.get_height() == bar.get_height())
    expected = sorted(round(cell.interval.estimate, 6) for cell in agg.memorization.values()
                      if cell.interval.estimate == cell.interval.estimate)
    assert heights == expected


def test_every_mean_in_the_figures_has_its_seeds_as_dots(report, rebuilt):
    results = load_results(report["results"], report["methods"], report["seeds"])
    agg = aggregate(results)

    def dots(figure) -> list[float]:
        return sorted(round(y, 6) for axes in figure.axes for line in axes.get_lines()
                      if line.get_gid() == plots.SEED_DOTS for y in line.get_ydata())

    per_seed_em = sorted(round(100 * v, 6) for method in report["methods"] for s in ("test", "seen")
                         for variant in VARIANTS for v in rebuilt[(method, s, variant)]["contextual"].mean(axis=1))
    assert dots(plots.contextual_em_figure(results, agg)) == per_seed_em
    counterfactual = sorted(round(100 * v, 6) for method in report["methods"]
                            for v in rebuilt[(method, "test", "counterfactual")]["contextual"].mean(axis=1))
    # Two panels (trainable share, memory), each with every method's seeds.
    assert dots(plots.accuracy_vs_cost_figure(results, agg)) == sorted(counterfactual * 2)
    ratios = sorted(round(100 * o.sum() / (o.sum() + s.sum()), 6) for method in report["methods"]
                    for set_name in ("test", "seen")
                    for o, s in zip(*rebuilt[(method, set_name)]) if o.sum() + s.sum() > 0)
    assert dots(plots.memorization_figure(results, agg)) == ratios
    # The headline: each compared method's per-seed differences from full on every `test` variant.
    converged = [m for m in report["methods"] if m != "full" and agg.convergence[m].converged]
    differences = sorted(round(100 * v, 6) for method in converged for variant in VARIANTS
                         for v in (rebuilt[(method, "test", variant)]["contextual"]
                                   - rebuilt[("full", "test", variant)]["contextual"]).mean(axis=1))
    headline = build_figures(results, agg)[HEADLINE]
    across = sorted(round(x, 6) for axes in headline.axes for line in axes.get_lines()
                    if line.get_gid() == plots.SEED_DOTS for x in line.get_xdata())     # methods as rows
    assert across == differences


def test_the_report_leads_with_the_headline_drawn_from_the_comparison_table(report):
    """The first section and figure is the headline; each point and bar is the cell of the
    comparison table on `test` (same family, same Holm-level interval), filled where it is marked."""
    text = _text(report)
    assert text.index("## At a glance") < text.index("## Overview") < text.index("\n### Method keys")
    assert text.index(f"({HEADLINE}.png)") < min(text.index(f"({name}.png)") for name in FIGURE_NAMES[1:])
    assert text.index(f"({HEADLINE}.png)") < text.index("\n|")          # above the first table
    rows = _tables(report)["Each method minus `full` on `test` (paired by seed and question)"]
    results = load_results(report["results"], report["methods"], report["seeds"])
    figure = build_figures(results, aggregate(results))[HEADLINE]
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == [m for m in report["methods"] if m != "full"]
    assert [a.get_title() for a in figure.axes] == ["factual", "counterfactual (primary endpoint)", "empty", "random"]
    shown = 0
    for axes in figure.axes:
        variant = axes.get_title().split(" ")[0]
        texts = {round(t.get_position()[1]): t.get_text() for t in axes.texts}
        for container in axes.containers:
            line, _, bars = container.lines
            assert line.get_gid() == POINT
            method = labels[round(line.get_ydata()[0])]
            row = _row(rows, method=method, variant=variant)
            if bars:
                (segment,) = bars[0].get_segments()
                cell = fmt.signed_interval(line.get_xdata()[0], segment[0][0], segment[1][0])
            else:
                cell = fmt.signed_interval(line.get_xdata()[0], None, None)
            assert cell == row["Δ contextual EM (pp)"]
            assert (line.get_markerfacecolor() != "white") == (row["contextual EM vs `full`"] in ("higher", "lower"))
            shown += 1
        assert texts == {labels.index(STALLED): "not converged: not compared"}
    assert shown == 4 * (len(report["methods"]) - 2)


def test_glossary_names_each_key_with_the_registry_description(report, cfg):
    rows = _tables(report)["Method keys"]
    assert [row["method"] for row in rows] == list(report["methods"])
    for row in rows:
        registry = cfg.methods[row["method"]].method
        assert row["registry method"] == f"`{registry}`"
        assert row["what it trains"] == METHOD_DESCRIPTIONS[registry]
        assert row["seeds"] == ", ".join(map(str, report["seeds"]))
    assert _row(rows, method=STALLED)["registry method"] == "`lora`"
    assert "r 8" in _row(rows, method="lora")["options"]
    caption = _text(report).split("### Method keys", 1)[1].split("\n### ", 1)[0]
    assert "`methods:` in params.yaml" in caption and f"`prefix`: {METHOD_DESCRIPTIONS['prefix']}" in caption


def test_every_figure_has_a_heading_and_a_caption(report):
    text = _text(report)
    for name in FIGURE_NAMES:
        heading, image, caption = re.search(rf"### (.+)\n\n(!\[.+\]\({name}\.png\))\n\n_(.+)_", text).groups()
        assert heading and len(caption) > 40
    assert "### Contextual EM against training cost" in text


# ---- convergence, training, learning rates -------------------------------------------------------

def test_not_converged_method_is_listed_with_its_curve_and_not_ranked(report):
    assert CONVERGED_WELL_FORMED_PCT == 50.0
    shares = [_metrics(report, STALLED, s).sets["test"]["factual"]["well_formed_pct"] for s in report["seeds"]]
    assert np.mean(shares) < CONVERGED_WELL_FORMED_PCT
    for method in ("full", "lora"):
        assert np.mean([_metrics(report, method, s).sets["test"]["factual"]["well_formed_pct"]
                        for s in report["seeds"]]) >= CONVERGED_WELL_FORMED_PCT
    text = _text(report)
    rows = _tables(report)["Methods that did not converge"]
    assert {r["method"] for r in rows} == {STALLED}
    for seed in report["seeds"]:
        curve = read_curve(report["results"] / STALLED / f"seed{seed}" / "train_curve.csv")
        row = _row(rows, method=STALLED, seed=str(seed))
        assert row["validation loss by step"] == ", ".join(f"{r.step}: {r.val_loss:.3f}" for r in curve
                                                          if r.val_loss is not None)
    convergence = text.split("## Convergence", 1)[1].split("\n## ", 1)[0]
    assert "training-curves figure" in convergence and f"`{STALLED}`" in convergence
    numbers = text.split("## This run in numbers", 1)[1].split("\n## ", 1)[0]
    assert f"`{STALLED}`" in numbers and "Not converged" in numbers and "not ranked" in numbers


def test_training_table_shows_each_runs_lr(report):
    rows = _tables(report)["Training runs"]
    assert len(rows) == len(report["methods"]) * len(report["seeds"])
    for method in report["methods"]:
        for seed in report["seeds"]:
            train = _train(report, method, seed)
            row = _row(rows, method=method, seed=str(seed))
            assert row["lr"] == fmt.scalar(float(train.lr))
            assert row["lr from"] == ("tune stage" if train.lr_selected else "params.yaml")
            assert row["steps"] == fmt.count(train.steps) and row["status"] == train.run.status
    assert "num_virtual_tokens × d_model" in _text(report)


def test_learning_rate_search_of_the_tune_stage(report):
    """stage_results ran `cfqa tune` for full and lora (not for `stalled`): every trial is shown,
    with its score at each rung, and per method the choice and the searched range."""
    tables = _tables(report)
    rows, choices = tables["Learning-rate trials"], tables["Learning-rate search"]
    for method in report["methods"]:
        path = report["results"] / method / "lr_selection.json"
        if not path.is_file():
            assert not [row for row in rows if row["method"] == method]
            continue
        selection = read_lr_selection(path, method)
        shown = [row for row in rows if row["method"] == method]
        assert [row["lr"] for row in shown] == [fmt.scalar(float(t.lr)) for t in selection.trials]
        assert [row["chosen"] for row in shown] == ["chosen" if t.lr == selection.chosen_lr else ""
                                                    for t in selection.trials]
        for row, trial in zip(shown, selection.trials):
            assert row["rung 1"] == (f"{fmt.percent(trial.rungs[0].val_contextual_em_pct)} · "
                                     f"{fmt.decimal(trial.rungs[0].val_loss, 3)}")
        choice = _row(choices, method=method)
        assert choice["chosen lr"] == fmt.scalar(selection.chosen_lr)
        assert choice["chosen lies"] == ("inside" if selection.chosen_inside else "AT THE EDGE")
        assert choice["trials"] == fmt.count(len(selection.trials))
        assert all(_train(report, method, seed).lr == selection.chosen_lr for seed in report["seeds"])


def test_the_first_answer_token_before_and_after_training(report):
    """train.json's probe of the format marker, per method; `stalled` (one step) is explained by it."""
    rows = _tables(report)["Output format: the first answer token"]
    for method in report["methods"]:
        probes = [_train(report, method, seed).first_target_token for seed in report["seeds"]]
        row = _row(rows, method=method)
        assert row["first target token"] == probes[0].token == "▁contextual:"
        assert row["rank after"] == fmt.count(int(np.median([p.rank_median_after for p in probes])))
        assert row["probability after (%)"] == fmt.percent(np.mean([p.probability_after_pct for p in probes]))
    stalled = [_train(report, STALLED, seed).first_target_token for seed in report["seeds"]]
    assert f"is still token {int(np.median([p.rank_median_after for p in stalled]))} of" in _text(report)


def test_memory_shows_the_sum_of_parts_and_a_measured_peak(report):
    tables = _tables(report)
    sums = {m: np.mean([_train(report, m, s).cost.step_memory.sum_bytes for s in report["seeds"]])
            for m in report["methods"]}
    for method in report["methods"]:
        row = _row(tables["Training memory by part"], method=method)
        per_seed = [_train(report, method, s).cost.step_memory.sum_bytes for s in report["seeds"]]
        assert row["sum of parts"] == measured_cell(per_seed, fmt.bytes_size)
        assert _row(tables["Cost of each method"], method=method)["step memory (sum of parts)"] == row["sum of parts"]
        peaks = [_train(report, method, s).cost.peak_memory_bytes for s in report["seeds"]]
        assert row["measured peak"] == measured_cell(peaks, fmt.bytes_size)
    assert _row(tables["Training memory by part"], method="full")["sum / full"] == "1.00"
    assert _row(tables["Training memory by part"], method="lora")["sum / full"] == f"{sums['lora'] / sums['full']:.2f}"


def test_target_loss_is_the_seed_mean_of_each_variant_s_loss(report):
    rows = _tables(report)["Accuracy on `test` by method and context variant"]
    for method in report["methods"]:
        for variant in VARIANTS:
            losses = [_metrics(report, method, s).sets["test"][variant]["target_loss_nats"] for s in report["seeds"]]
            assert all(loss is not None and loss > 0 for loss in losses)
            row = _row(rows, method=method, variant=variant)
            assert row["target loss (nats/token)"] == fmt.decimal(np.mean(losses), 3)


def test_efficiency_reads_snakemake_benchmarks_where_they_exist(tmp_path, runs, cfg, report):
    """Snakemake's benchmark files (written here by Snakemake's own writer) fill the Snakemake
    columns of the runs that have them; a run made without Snakemake shows a dash."""
    from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

    root = tmp_path / "run"
    layout = RunLayout(str(root))
    shutil.copytree(runs["results"], root / "results")
    seconds = {0: 40.0, 1: 50.0}
    for seed, wall in seconds.items():
        for stage_name, rss in (("train", 600.0), ("evaluate", 400.0)):
            record = BenchmarkRecord(max_rss=rss + seed, cpu_time=wall / 2)
            record.running_time, record.data_collected = wall, True
            path = layout.benchmark(stage_name, "full", seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_benchmark_records([record], str(path), False)
    assert layout.benchmark("train", "full", 1) == root / "logs/benchmarks/train/full/seed1.tsv"
    pretrain = BenchmarkRecord(max_rss=1024.0, cpu_time=100.0)
    pretrain.running_time, pretrain.data_collected = 123.4, True
    assert layout.benchmark("pretrain") == root / "logs/benchmarks/pretrain.tsv"
    write_benchmark_records([pretrain], str(layout.benchmark("pretrain")), False)
    report_stage.run(cfg, results=root / "results", data_stats=runs["data_stats"], out=tmp_path / "reports",
                     summary=tmp_path / "summary.json")
    text = (tmp_path / "reports/report.md").read_text()
    assert "Pretraining job (Snakemake's benchmark): 123.4 s, max RSS 1.0 GiB." in text
    assert "Pretraining job" not in _text(report)     # made without Snakemake: no benchmark record
    rows = markdown_tables(text)["Cost of each method"]
    full = _row(rows, method="full")
    # Seeds 0 and 1 measured 40 and 50 s: the seed mean with its t interval on 1 degree of freedom.
    jobs = statistics.seed_interval([40.0, 50.0])
    assert full["train job (Snakemake)"] == full["evaluate job (Snakemake)"] == \
        f"45.0 s [{fmt.seconds(jobs.low)}, {fmt.seconds(jobs.high)}]"
    assert jobs.low == 0.0 and jobs.high == pytest.approx(45.0 + 12.7062 * 5.0, abs=1e-3)
    rss = statistics.seed_interval([600.0 * 1024 * 1024, 601.0 * 1024 * 1024])
    assert full["train job max RSS (Snakemake)"] == (f"{fmt.bytes_size(rss.estimate)} [{fmt.bytes_size(rss.low)}, "
                                                     f"{fmt.bytes_size(rss.high)}]")
    lora = _row(rows, method="lora")
    assert lora["train job (Snakemake)"] == lora["evaluate job max RSS (Snakemake)"] == fmt.MISSING
    for method in runs["methods"]:
        # The seed mean of train.json's longest epoch; a dash where no run recorded one.
        longest = [read_train_record(root / "results" / method / f"seed{s}" / "train.json").cost.max_epoch_time_s
                   for s in runs["seeds"]]
        assert _row(rows, method=method)["max epoch time"] == measured_cell(longest, fmt.seconds)
        steps = [read_train_record(root / "results" / method / f"seed{s}" / "train.json").cost.step_time_s
                 for s in runs["seeds"]]
        if len(set(steps)) > 1:      # measured times differ by seed: an interval over seeds
            interval = statistics.seed_interval(steps)
            assert _row(rows, method=method)["step time"] == \
                f"{fmt.seconds(interval.estimate)} [{fmt.seconds(interval.low)}, {fmt.seconds(interval.high)}]"


def test_data_statistics_tables(report):
    tables = _tables(report)
    stats = read_data_stats(report["data_stats"])
    counts = _row(tables["Examples per split and variant"], **{"": "test"})
    assert counts["counterfactual"] == fmt.count(stats.counts["test"]["counterfactual"])
    assert counts["total"] == fmt.count(sum(stats.counts["test"].values()))


# ---- text ----------------------------------------------------------------------------------

def test_numbers_in_the_report_have_intervals_and_seed_counts(report, rebuilt):
    text = _text(report)
    numbers = text.split("## This run in numbers", 1)[1].split("\n## ", 1)[0]
    for method in report["methods"]:
        interval = statistics.mean_interval(rebuilt[(method, "test", "factual")]["contextual"])
        assert (f"`{method}` ({len(report['seeds'])} seeds): contextual EM on factual `test` contexts "
                f"{_interval_text(interval)} %") in numbers
    lora = next(line for line in numbers.splitlines() if line.startswith("- `lora`"))
    # A difference is a win or a loss only on the primary endpoint and only where Holm calls it.
    family = ("lora", WITH_A)
    decisions = statistics.decide([statistics.paired_difference(
        rebuilt[(m, "test", "counterfactual")]["contextual"], rebuilt[("full", "test", "counterfactual")]["contextual"])
        for m in family])
    decision = decisions[0]
    d = decision.difference
    assert f"{fmt.signed_interval(d.difference, d.low, d.high)} pp, Holm p {fmt.p_value(decision.holm_p)}" in lora
    if decision.significant:
        assert ("higher than `full`" if d.difference > 0 else "lower than `full`") in lora
    else:
        assert "against `full` on the primary endpoint" in lora and "n.s." in lora
    limitations = text.split("## Limitations", 1)[1]
    hardware = _train(report, "full", report["seeds"][0]).run.hardware
    assert hardware.cpu_model in limitations and hardware.cpu_capability in limitations
    assert f"{len(report['methods'])} methods × {len(report['seeds'])} seeds" in limitations
    assert "intervals over seeds and questions are what to compare" in text


def test_notes_as_text_or_list(runs):
    results = load_results(runs["results"], runs["methods"], runs["seeds"])
    agg = aggregate(results)
    document = build_document(results, agg, {}, {}, notes="First note\nwrapped.\n\nSecond note.")
    custom = render_markdown(document).split("## Limitations", 1)[1]
    assert custom.strip().splitlines()[-2:] == ["- First note wrapped.", "- Second note."]
    listed = build_document(results, agg, {}, {}, notes=["one", "two"]).sections[-1]
    assert listed.bullets[-2:] == ("one", "two")


# ---- outputs -------------------------------------------------------------------------------

def test_summary_holds_seed_means_and_intervals(report, rebuilt):
    summary = read_summary(report["summary"])
    assert list(summary.methods) == list(report["methods"])
    for method in report["methods"]:
        values = summary.methods[method]
        assert values["n_seeds"] == len(report["seeds"])
        interval = statistics.mean_interval(rebuilt[(method, "test", "factual")]["contextual"])
        assert values["test_factual_contextual_em_pct"] == interval.estimate
        assert values["test_factual_contextual_em_pct_low"] == interval.low
        assert values["test_factual_contextual_em_pct_high"] == interval.high
        trains = [_train(report, method, s) for s in report["seeds"]]
        assert values["trainable_params"] == trains[0].params.trainable
        assert values["step_time_s"] == pytest.approx(np.mean([t.cost.step_time_s for t in trains]))
        assert all(key == "n_seeds" or re.search(r"_(pct|bytes|s|ms|nats|params|loss)(_low|_high)?$", key)
                   for key in values), values


def test_report_is_byte_identical_on_a_rerun_and_fast(report, runs, cfg, tmp_path):
    again = {"out": tmp_path / "reports", "summary": tmp_path / "summary.json"}
    report_stage.run(cfg, runs["results"], runs["data_stats"], **again)
    for path in sorted(report["out"].iterdir()):
        assert (again["out"] / path.name).read_bytes() == path.read_bytes(), path.name
    assert again["summary"].read_bytes() == report["summary"].read_bytes()
    assert report["seconds"] < 30


def test_html_is_self_contained(report):
    page = (report["out"] / "index.html").read_text()
    assert not re.search(r"<(script|link)\b", page)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5
    assert all(base64.b64decode(data).startswith(PNG_SIGNATURE) for data in images)
    for name in ("headline", "contextual_em", "memorization_ratio", "accuracy_vs_cost", "training_curves"):
        assert (report["out"] / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
        assert f"({name}.png)" in _text(report)


def test_html_escapes_text_from_params(report, runs):
    results = load_results(runs["results"], runs["methods"], runs["seeds"])
    document = build_document(results, aggregate(results), {}, {"note": "<b>bold</b>"}, notes=["<i>x</i>"])
    images = {name: (report["out"] / f"{name}.png").read_bytes() for name in FIGURE_NAMES}
    page = render_html(document, images)
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<i>x</i>" not in page


# ---- errors --------------------------------------------------------------------------------

def test_missing_metrics_names_the_file(tmp_path, runs, cfg):
    results = tmp_path / "results"
    shutil.copytree(runs["results"], results)
    (results / "lora" / "seed1" / "metrics.json").unlink()
    with pytest.raises(ResultsError, match=re.escape(str(results / "lora" / "seed1" / "metrics.json")) + ": missing"):
        report_stage.run(cfg, results, runs["data_stats"], tmp_path / "reports", tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "reports").exists()


def test_question_ids_that_differ_name_the_file(tmp_path, runs, cfg):
    results = tmp_path / "results"
    shutil.copytree(runs["results"], results)
    path = results / "lora" / "seed1" / "per_question.jsonl"
    rows = read_question_scores(path, [m.name for m in metric_registry.registered()])
    dropped = next(r for r in rows if r.set == "test" and r.variant == "factual")
    write_question_scores(path, [r for r in rows if r is not dropped])
    with pytest.raises(ResultsError, match=re.escape(str(path)) + r": set `test`, variant factual: question ids "
                                           r"differ from .*full/seed0/per_question\.jsonl: 1 missing \("
                                           + re.escape(repr(dropped.id))):
        report_stage.run(cfg, results, runs["data_stats"], tmp_path / "reports", tmp_path / "s.json")


def test_wrong_field_or_schema_version_is_named(tmp_path, runs):
    source = runs["results"] / "full" / "seed0" / "metrics.json"
    record = json.loads(source.read_text())
    record["memorization"]["test"]["memorization_ratio_pct"] = "high"
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps(record))
    with pytest.raises(ResultsError, match=r"metrics\.json: Expected `float \| null`, got `str` - at "
                                           r"`\$\.memorization\[\.\.\.\]\.memorization_ratio_pct`"):
        read_metrics(bad)
    record = json.loads(source.read_text())
    record["schema_version"] = 1
    bad.write_text(json.dumps(record))
    with pytest.raises(ResultsError, match=r"schema version 1, this code reads \d+; rerun `cfqa evaluate"):
        read_metrics(bad)


def test_bad_curve_row_names_file_and_line(tmp_path):
    path = tmp_path / "train_curve.csv"
    path.write_text("step,train_loss,val_loss\n10,1.5,\n20,oops,1.2\n")
    with pytest.raises(ResultsError, match=r"train_curve\.csv:3: column 'train_loss'"):
        read_curve(path)
    path.write_text("step,loss\n10,1.5\n")
    with pytest.raises(ResultsError, match=r"train_curve\.csv:1: expected columns"):
        read_curve(path)


# ---- pure formatting ----------------------------------------------------------------------

def test_number_formats():
    assert fmt.bytes_size(1_572_864) == "1.5 MiB"
    assert fmt.bytes_size(512) == "512 B"
    assert fmt.count(1_234_567) == "1,234,567"
    assert fmt.seconds(0.0423) == "42 ms" and fmt.seconds(75.25) == "75.2 s"
    assert fmt.share(0.0123456) == "0.0123"
    assert fmt.percent(None) == fmt.MISSING and fmt.percent(float("nan")) == fmt.MISSING
    assert fmt.interval(77.34, 70.06, 84.0) == "77.3 [70.1, 84.0]"
    assert fmt.interval(12.0, float("nan"), float("nan")) == "12.0"
    assert fmt.signed_interval(-3.21, -7.5, 1.04) == "-3.2 [-7.5, +1.0]"
    assert fmt.p_value(0.00049975) == "0.0005" and fmt.p_value(1.0) == "1"


def test_mapping_table_matrix_with_and_without_total():
    ints = mapping_table("counts", "Counts", {"a": {"x": 1, "y": 2}, "b": {"y": 5}})
    assert ints.headers == ("", "x", "y", "total")
    assert ints.rows == (("a", "1", "2", "3"), ("b", fmt.MISSING, "5", "5"))
    mixed = mapping_table("rates", "Rates", {"a": {"x": 0.5}})
    assert mixed.headers == ("", "x") and mixed.rows == (("a", "0.5"),)


# ---- training mixture -----------------------------------------------------------------------

def test_mixture_table_and_answerability_effect(report, rebuilt):
    """`full` (f+cf) and `full_fcfa` (f+cf+a) differ only in the mixture: one mixture table, and
    the effect of answerability as the paired difference of their contextual EM."""
    tables = _tables(report)
    mixtures = tables["Training mixture of `full` × `test` variant"]
    assert [(row["mixture"], row["method"]) for row in mixtures] == [("f+cf", "`full`"), ("f+cf+a", f"`{WITH_A}`")]
    results = load_results(report["results"], report["methods"], report["seeds"])
    agg = aggregate(results)
    for row, method in zip(mixtures, ("full", WITH_A)):
        cell = agg.accuracy[(method, "test", "counterfactual", "contextual_em")]
        assert row["counterfactual contextual EM (%)"] == _interval_text(cell)
    effects = tables["Adding answerability (empty + random) to a mixture of `full`: contextual EM on `test`"]
    assert [row["variant"] for row in effects] == ["factual", "counterfactual"]
    for row in effects:
        with_a, without = (rebuilt[(m, "test", row["variant"])]["contextual"] for m in (WITH_A, "full"))
        d = statistics.paired_difference(with_a, without)
        assert d.difference == pytest.approx(100 * float((with_a - without).mean()))
        assert row["runs compared"] == f"`{WITH_A}` − `full`" and row["seeds"] == str(len(report["seeds"]))
    # One family: the pair on both variants.
    decisions = statistics.decide([statistics.paired_difference(*(rebuilt[(m, "test", variant)]["contextual"]
                                                                  for m in (WITH_A, "full")))
                                   for variant in ("factual", "counterfactual")])
    for row, decision in zip(effects, decisions):
        d = decision.difference
        assert row["Δ contextual EM (pp)"] == fmt.signed_interval(d.difference, d.low, d.high)
        assert row["Holm p"] == fmt.p_value(decision.holm_p)
    # The text on what answerability costs is computed from these runs, never typed.
    mixture = _text(report).split("## Training mixture", 1)[1].split("\n## ", 1)[0]
    for row in effects:
        assert f"`{WITH_A}` − `full` on {row['variant']} contexts {row['Δ contextual EM (pp)']} pp" in mixture


def test_mixture_labels():
    assert mixture_label(["factual"]) == "f"
    assert mixture_label(["factual", "counterfactual", "empty", "random"]) == "f+cf+a"
    assert mixture_label(["factual", "empty", "random"]) == "f+a"
    assert mixture_label(["factual", "counterfactual", "empty"]) == "f+cf+e"
