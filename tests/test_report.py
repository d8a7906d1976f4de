"""The report stage on real result files (the stages run on the tiny configuration): every
table holds the numbers of the right method in the unit its header names, the figures plot
those numbers, the HTML is self-contained, summary.json has the key metrics."""
from __future__ import annotations

import base64
import json
import re
import shutil

import pytest

from cfqa import config as config_module
from cfqa.contract import (ResultsError, read_curve, read_data_stats, read_metrics, read_summary,
                           read_train_record)
from cfqa.report import formatting as fmt
from cfqa.report import plots
from cfqa.report.document import build_document
from cfqa.report.inputs import load_method_results
from cfqa.report.render import render_html, render_markdown
from cfqa.report.tables import mapping_table
from cfqa.stages import report as report_stage

pytestmark = pytest.mark.slow   # the stages run once per session (stage_results fixture)

VARIANTS = ("factual", "counterfactual", "empty", "random")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cfg(stage_results) -> config_module.Config:
    return config_module.load([stage_results.params])


@pytest.fixture(scope="module")
def report(tmp_path_factory, stage_results, cfg) -> dict:
    """One run of the stage, shared by the tests that read its outputs (rendering the
    figures is the slow part)."""
    root = tmp_path_factory.mktemp("report")
    paths = {"results": stage_results.results, "data_stats": stage_results.data_stats,
             "out": root / "reports", "summary": root / "summary.json"}
    report_stage.run(cfg, **paths)
    return {**paths, "methods": stage_results.methods}


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


def _tables(report) -> dict[str, list[dict[str, str]]]:
    return markdown_tables((report["out"] / "report.md").read_text())


def _metrics(report, method):
    return read_metrics(report["results"] / method / "metrics.json", method)


def _train(report, method):
    return read_train_record(report["results"] / method / "train.json", method)


def test_accuracy_tables_hold_each_methods_numbers(report):
    tables = _tables(report)
    for set_name in ("test", "seen"):
        rows = tables[f"Accuracy on `{set_name}` by method and context variant"]
        assert len(rows) == len(report["methods"]) * len(VARIANTS)
        for method in report["methods"]:
            for variant, cell in _metrics(report, method).sets[set_name].items():
                row = _row(rows, method=method, variant=variant)
                assert row["contextual EM (%)"] == fmt.percent(cell.contextual_em_pct)
                assert row["contextual F1 (%)"] == fmt.percent(cell.contextual_f1_pct)
                assert row["contextual lenient (%)"] == fmt.percent(cell.contextual_lenient_pct)
                assert row["parametric EM (%)"] == fmt.percent(cell.parametric_em_pct)
                assert int(row["n"]) == cell.n > 0


def test_memorization_ratio_is_one_unit_everywhere(report, stage_results):
    """M_R = p_o / (p_o + p_s) of the same row, in percent, in the table, the plot, the summary
    and MLflow."""
    rows = _tables(report)["Memorization on counterfactual contexts"]
    summary = read_summary(report["summary"]).methods
    checked = 0
    for method in report["methods"]:
        metrics = _metrics(report, method)
        row = _row(rows, method=method)
        for set_name in ("test", "seen"):
            block = metrics.memorization[set_name]
            assert block.n > 0
            if block.memorization_ratio_pct is None:
                assert row[f"M_R {set_name} (%)"] == fmt.MISSING
                continue
            p_o, p_s = float(row[f"p_o {set_name} (%)"]), float(row[f"p_s {set_name} (%)"])
            assert float(row[f"M_R {set_name} (%)"]) == pytest.approx(100 * p_o / (p_o + p_s), abs=0.15)
            assert block.memorization_ratio_pct == pytest.approx(
                100 * block.original_pct / (block.original_pct + block.substitute_pct))
            assert summary[method][f"{set_name}_memorization_ratio_pct"] == block.memorization_ratio_pct
            checked += 1
    assert checked > 0
    results = [load_method_results(report["results"] / m, m) for m in report["methods"]]
    axes = plots.memorization_figure(results, ["test", "seen"]).axes[0]
    assert axes.get_ylim() == (0, 100) and "%" in axes.get_ylabel()
    heights = sorted(round(bar.get_height(), 6) for bar in axes.patches if bar.get_height() == bar.get_height())
    expected = sorted(round(r.metrics.memorization[s].memorization_ratio_pct, 6) for r in results
                      for s in ("test", "seen") if r.metrics.memorization[s].memorization_ratio_pct is not None)
    assert heights == expected


def test_by_type_table_has_types_baseline_and_overall_row(report):
    rows = _tables(report)["Accuracy on `test` by answer type"]
    for method in report["methods"]:
        metrics = _metrics(report, method)
        types = sorted(set(metrics.most_frequent_em_pct["test"]) - {"all"})
        assert [r["answer type"] for r in rows if r["method"] == method] == types + ["all"]
        for answer_type in types:
            row = _row(rows, method=method, **{"answer type": answer_type})
            assert row["most-frequent EM (%)"] == fmt.percent(metrics.most_frequent_em_pct["test"][answer_type])
            cell = metrics.by_type["test"]["factual"][answer_type]
            assert row["factual contextual EM (%)"] == fmt.percent(cell.contextual_em_pct)
        overall = _row(rows, method=method, **{"answer type": "all"})
        assert overall["factual contextual EM (%)"] == fmt.percent(metrics.sets["test"]["factual"].contextual_em_pct)


def test_memory_shows_the_sum_of_parts_and_a_measured_peak(report):
    tables = _tables(report)
    for method in report["methods"]:
        cost = _train(report, method).cost
        parts = cost.step_memory
        assert parts.sum_bytes == (parts.parameters_bytes + parts.gradients_bytes + parts.optimizer_state_bytes
                                   + parts.activations_bytes)
        assert cost.peak_memory_bytes is not None and cost.peak_memory_bytes > 0
        assert "peak RSS" in cost.peak_memory_measure
        row = _row(tables["Training memory by part"], method=method)
        assert row["sum of parts"] == fmt.bytes_size(parts.sum_bytes)
        assert row["measured peak"] == fmt.bytes_size(cost.peak_memory_bytes)
        efficiency = _row(tables["Cost of each method"], method=method)
        assert efficiency["step memory (sum of parts)"] == fmt.bytes_size(parts.sum_bytes)
        assert efficiency["measured peak memory"] == fmt.bytes_size(cost.peak_memory_bytes)
    assert _row(tables["Training memory by part"], method="full")["sum / full"] == "1.00"
    lora = _row(tables["Training memory by part"], method="lora")
    full_sum = _train(report, "full").cost.step_memory.sum_bytes
    assert lora["sum / full"] == f"{_train(report, 'lora').cost.step_memory.sum_bytes / full_sum:.2f}"
    assert float(lora["sum / full"]) < 1.0


def test_training_table_and_prompt_count_note(report):
    rows = _tables(report)["Training runs"]
    for method in report["methods"]:
        train = _train(report, method)
        row = _row(rows, method=method)
        assert row["steps"] == fmt.count(train.steps) and row["status"] == train.run.status
        assert row["lr"] == fmt.scalar(train.run.params["train"]["lr"])
    assert "num_virtual_tokens × d_model" in (report["out"] / "report.md").read_text()


def test_data_statistics_tables(report):
    tables = _tables(report)
    stats = read_data_stats(report["data_stats"])
    counts = _row(tables["Examples per split and variant"], **{"": "test"})
    assert counts["counterfactual"] == fmt.count(stats.counts["test"]["counterfactual"])
    assert counts["total"] == fmt.count(sum(stats.counts["test"].values()))
    assert "Answer mentions inside longer names, left unreplaced" in tables


def test_html_is_self_contained(report):
    page = (report["out"] / "index.html").read_text()
    assert not re.search(r"<(script|link)\b", page)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(data).startswith(PNG_SIGNATURE) for data in images)
    for name in ("contextual_em", "memorization_ratio", "accuracy_vs_cost", "training_curves"):
        assert (report["out"] / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
        assert f"({name}.png)" in (report["out"] / "report.md").read_text()


def test_html_escapes_text_from_params(report):
    results = [load_method_results(report["results"] / m, m) for m in report["methods"]]
    document = build_document(results, {}, ["test"], {"note": "<b>bold</b>"}, notes=["<i>x</i>"])
    images = {name: (report["out"] / f"{name}.png").read_bytes() for name in plots.FIGURE_CAPTIONS}
    page = render_html(document, images)
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<i>x</i>" not in page


def test_summary_holds_key_metrics_with_units(report):
    summary = read_summary(report["summary"])
    assert list(summary.methods) == list(report["methods"])
    for method in report["methods"]:
        values, metrics, train = summary.methods[method], _metrics(report, method), _train(report, method)
        assert values["test_counterfactual_contextual_em_pct"] == metrics.sets["test"]["counterfactual"].contextual_em_pct
        assert values["trainable_params"] == train.params.trainable
        assert values["checkpoint_bytes"] == train.cost.checkpoint_bytes
        assert values["step_memory_sum_bytes"] == train.cost.step_memory.sum_bytes
        assert values["peak_memory_bytes"] == train.cost.peak_memory_bytes
        assert all(re.search(r"_(pct|bytes|s|ms|params|loss)$", key) for key in values), values


def test_numbers_in_the_report_come_from_this_run(report):
    text = (report["out"] / "report.md").read_text()
    numbers = text.split("## This run in numbers", 1)[1].split("\n## ", 1)[0]
    for method in report["methods"]:
        factual = _metrics(report, method).sets["test"]["factual"].contextual_em_pct
        assert f"`{method}`: contextual EM on factual `test` contexts {factual:.1f} %" in numbers
    limitations = text.split("## Limitations", 1)[1]
    train = _train(report, "full")
    assert train.run.hardware.cpu_model in limitations and "one training run each" in limitations


def test_notes_as_text_or_list(report):
    results = [load_method_results(report["results"] / m, m) for m in report["methods"]]
    document = build_document(results, {}, ["test"], {}, notes="First note\nwrapped.\n\nSecond note.")
    custom = render_markdown(document).split("## Limitations", 1)[1]
    assert custom.strip().splitlines()[-2:] == ["- First note wrapped.", "- Second note."]
    listed = build_document(results, {}, ["test"], {}, notes=["one", "two"]).sections[-1]
    assert listed.bullets[-2:] == ("one", "two")


def test_results_are_self_describing(report):
    for method in report["methods"]:
        for record in (_train(report, method), _metrics(report, method)):
            run = record.run
            assert set(run.versions) >= {"python", "torch", "transformers", "peft"}
            assert run.hardware.cpu_model and run.hardware.blas and run.hardware.torch_threads >= 1
            assert re.fullmatch(r"[0-9a-f]{64}", run.data_sha256)
            assert re.fullmatch(r"[0-9a-f]{64}", run.backbone_sha256)
            assert run.params["options"] is not None and run.status in ("completed", "stopped_early")
        assert _train(report, method).run.backbone_sha256 == _metrics(report, method).run.backbone_sha256


def test_missing_metrics_names_the_file(tmp_path, stage_results, cfg):
    results = tmp_path / "results"
    shutil.copytree(stage_results.results, results)
    (results / "lora" / "metrics.json").unlink()
    with pytest.raises(ResultsError, match=re.escape(str(results / "lora" / "metrics.json")) + ": missing"):
        report_stage.run(cfg, results, stage_results.data_stats, tmp_path / "reports", tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_wrong_field_or_schema_version_is_named(tmp_path, stage_results):
    source = stage_results.results / "full" / "metrics.json"
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
    with pytest.raises(ResultsError, match=r"schema version 1, this code reads 2; rerun `cfqa evaluate"):
        read_metrics(bad)


def test_bad_curve_row_names_file_and_line(tmp_path):
    path = tmp_path / "train_curve.csv"
    path.write_text("step,train_loss,val_loss\n10,1.5,\n20,oops,1.2\n")
    with pytest.raises(ResultsError, match=r"train_curve\.csv:3: column 'train_loss'"):
        read_curve(path)
    path.write_text("step,loss\n10,1.5\n")
    with pytest.raises(ResultsError, match=r"train_curve\.csv:1: expected columns"):
        read_curve(path)


def test_curve_round_trips_through_the_writer(stage_results, tmp_path):
    from cfqa.contract import write_curve

    rows = read_curve(stage_results.results / "full" / "train_curve.csv")
    assert rows and any(r.val_loss is not None for r in rows)
    write_curve(tmp_path / "c.csv", rows)
    assert read_curve(tmp_path / "c.csv") == rows


def test_number_formats():
    assert fmt.bytes_size(1_572_864) == "1.5 MiB"
    assert fmt.bytes_size(512) == "512 B"
    assert fmt.count(1_234_567) == "1,234,567"
    assert fmt.seconds(0.0423) == "42 ms" and fmt.seconds(75.25) == "75.2 s"
    assert fmt.share(0.0123456) == "0.0123"
    assert fmt.percent(None) == fmt.MISSING and fmt.percent(float("nan")) == fmt.MISSING


def test_mapping_table_matrix_with_and_without_total():
    ints = mapping_table("counts", "Counts", {"a": {"x": 1, "y": 2}, "b": {"y": 5}})
    assert ints.headers == ("", "x", "y", "total")
    assert ints.rows == (("a", "1", "2", "3"), ("b", fmt.MISSING, "5", "5"))
    mixed = mapping_table("rates", "Rates", {"a": {"x": 0.5}})
    assert mixed.headers == ("", "x") and mixed.rows == (("a", "0.5"),)
