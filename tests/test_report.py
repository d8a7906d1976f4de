"""The report stage on small but realistic results of two methods: the tables hold the
numbers of the right method, the HTML is self-contained, summary.json has the key metrics."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from cfqa import config as config_module
from cfqa.report import formatting as fmt
from cfqa.report.document import build_document
from cfqa.report.inputs import ResultsError, load_method_results, read_curve
from cfqa.report.render import render_markdown
from cfqa.report.tables import mapping_table
from cfqa.stages import report as report_stage

VARIANTS = ("factual", "counterfactual", "empty", "random")
TYPES = ("LOCATION", "LANGUAGE")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _config(methods: dict) -> config_module.Config:
    raw = config_module.read_params([config_module.PROJECT_ROOT / "params.yaml"])
    raw["methods"] = methods
    return config_module.from_dict(raw)


@pytest.fixture(scope="module")
def cfg() -> config_module.Config:
    return _config({"full": {"options": {}}, "lora": {"options": {"r": 8, "note": "<b>bold</b>"}}})


def _set_metrics(offset: float) -> dict:
    """Distinct numbers per set, variant and method, so a value in the wrong row shows."""
    return {
        variant: {"n": 120 + i, "contextual_em": 80.0 - 10 * i + offset, "contextual_f1": 85.0 - 10 * i + offset,
                  "parametric_em": 40.0 + i + offset, "parametric_f1": 45.0 + i + offset,
                  "unanswerable_rate": 0.0 if i < 2 else 97.5 - offset}
        for i, variant in enumerate(VARIANTS)
    }


def _metrics(method: str, offset: float) -> dict:
    sets = {"test": _set_metrics(offset), "seen": _set_metrics(offset + 5)}
    by_type = {s: {v: {t: {"n": 60 + j + (1 if v == "factual" else 0), "contextual_em": cell["contextual_em"] - j,
                           "parametric_em": cell["parametric_em"] + j}
                       for j, t in enumerate(TYPES)}
                   for v, cell in variants.items()}
               for s, variants in sets.items()}
    return {
        "method": method,
        "sets": sets,
        "memorization": {"test": {"original": 10.0 + offset, "substitute": 70.0, "other": 20.0 - offset,
                                  "memorization_ratio": (10.0 + offset) / (80.0 + offset)},
                         "seen": {"original": 30.0 + offset, "substitute": 50.0, "other": 20.0 - offset,
                                  "memorization_ratio": (30.0 + offset) / (80.0 + offset)}},
        "by_type": by_type,
        "baseline": {"most_frequent_answer": {s: {"LOCATION": 16.8, "LANGUAGE": 24.0, "all": 20.4}
                                              for s in ("test", "seen")}},
        "inference": {"examples_per_s": 250.0 + offset, "ms_per_example": 4.0 - offset / 10},
    }


def _train(method: str, trainable: int, total: int, options: dict) -> dict:
    return {
        "method": method, "registry_method": method, "backbone": "base", "options": options,
        "train_config": {"lr": 0.001, "max_steps": 300}, "seed": 0,
        "params": {"trainable": trainable, "total": total, "trainable_percent": 100.0 * trainable / total},
        "cost": {"peak_memory_bytes": 3 * 1024 * 1024 * (1 + trainable // 100_000),
                 "memory_measure": "parameters + gradients + optimizer state + saved activations",
                 "memory_breakdown": {"parameters": 4 * total, "gradients": 4 * trainable,
                                      "optimizer_state": 8 * trainable, "activations": 2_000_000},
                 "step_time_s": 0.21 if method == "full" else 0.15, "examples_per_s": 150.0,
                 "checkpoint_bytes": 4 * trainable + 120, "wall_time_s": 64.5},
        "steps": 300, "best_step": 200, "best_val_loss": 0.4321, "stopped_early": False,
    }


METHODS = {"full": (1_000_000, 1_000_000, 0.0), "lora": (16_384, 1_016_384, 7.0)}


def _write_results(root: Path) -> Path:
    results = root / "results"
    for method, (trainable, total, offset) in METHODS.items():
        directory = results / method
        directory.mkdir(parents=True)
        options = {"r": 8, "note": "<b>bold</b>"} if method == "lora" else {}
        (directory / "train.json").write_text(json.dumps(_train(method, trainable, total, options)))
        (directory / "metrics.json").write_text(json.dumps(_metrics(method, offset)))
        (directory / "train_curve.csv").write_text(
            "step,train_loss,val_loss\n" + "".join(
                f"{s},{2.0 / s:.4f},{'' if s % 100 else f'{2.5 / s:.4f}'}\n" for s in range(10, 310, 10)))
    return results


def _write_stats(root: Path) -> Path:
    stats = {
        "counts": {"train": {v: 800 for v in VARIANTS}, "test": {v: 121 for v in VARIANTS}},
        "drop_reasons": {"no_typed_entity": 12, "no_substitute": 3},
        "answer_types": {"train": {"LOCATION": 500, "LANGUAGE": 300}},
        "substitute_sources": {"train": {"same_label": 790}, "extra": {"deep": {"x": 1}}},
        "seed": 0,
    }
    path = root / "data" / "stats.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(stats))
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory, cfg) -> dict:
    """One run of the stage, shared by the tests that read its outputs (rendering the
    figures is the slow part)."""
    root = tmp_path_factory.mktemp("report")
    results = _write_results(root)
    paths = {"results": results, "data_stats": _write_stats(root), "out": root / "reports",
             "summary": results / "summary.json"}
    report_stage.run(cfg, **paths)
    return paths


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


def test_accuracy_tables_hold_each_methods_numbers(report):
    tables = markdown_tables((report["out"] / "report.md").read_text())
    for set_name in ("test", "seen"):
        rows = tables[f"Accuracy on `{set_name}` by method and context variant"]
        assert len(rows) == 2 * len(VARIANTS)
        for method, (_, _, offset) in METHODS.items():
            cells = _metrics(method, offset)["sets"][set_name]
            for variant, cell in cells.items():
                row = _row(rows, method=method, variant=variant)
                assert float(row["contextual EM"]) == pytest.approx(cell["contextual_em"], abs=0.05)
                assert float(row["contextual F1"]) == pytest.approx(cell["contextual_f1"], abs=0.05)
                assert float(row["parametric EM"]) == pytest.approx(cell["parametric_em"], abs=0.05)
                assert int(row["n"]) == cell["n"]
    # lora's counterfactual contextual EM on test: 80 - 10 + 7
    assert _row(tables["Accuracy on `test` by method and context variant"],
                method="lora", variant="counterfactual")["contextual EM"] == "77.0"


def test_memorization_table_compares_test_and_seen(report):
    rows = markdown_tables((report["out"] / "report.md").read_text())["Memorization on counterfactual contexts"]
    assert _row(rows, method="full")["M_R test"] == "0.125"       # 10 / 80
    assert _row(rows, method="lora")["M_R seen"] == f"{37 / 87:.3f}"
    assert _row(rows, method="lora")["p_o test"] == "17.0"
    assert _row(rows, method="full")["other seen"] == "20.0"


def test_by_type_table_has_types_baseline_and_overall_row(report):
    rows = markdown_tables((report["out"] / "report.md").read_text())["Accuracy on `test` by answer type"]
    assert [r["answer type"] for r in rows if r["method"] == "lora"] == ["LANGUAGE", "LOCATION", "all"]
    language = _row(rows, method="lora", **{"answer type": "LANGUAGE"})
    assert language["most-frequent EM"] == "24.0"
    assert language["n"] == "62"                                  # factual variant's n for LANGUAGE (j = 1)
    assert language["counterfactual contextual EM"] == "76.0"     # 80 - 10 + 7 - 1
    assert language["empty parametric EM"] == "50.0"              # 40 + 2 + 7 + 1
    overall = _row(rows, method="full", **{"answer type": "all"})
    assert overall["most-frequent EM"] == "20.4"
    assert overall["factual contextual EM"] == "80.0" and overall["n"] == "120"


def test_efficiency_and_memory_tables(report):
    tables = markdown_tables((report["out"] / "report.md").read_text())
    lora = _row(tables["Cost of each method"], method="lora")
    assert lora["trainable params"] == "16,384"
    assert lora["trainable %"] == "1.61"                          # 16384 / 1016384
    assert lora["checkpoint"] == "64.1 KiB"                       # 65656 bytes
    assert lora["peak memory"] == "3.0 MiB"
    assert lora["step time"] == "150 ms"
    assert lora["inference ms/example"] == "3.30"
    assert lora["wall time"] == "64.5 s"
    assert _row(tables["Cost of each method"], method="full")["trainable %"] == "100.0"
    memory = _row(tables["Training memory by part"], method="full")
    assert memory["parameters"] == "3.8 MiB" and memory["optimizer state"] == "7.6 MiB"
    assert _row(tables["Training runs"], method="lora")["best val loss"] == "0.4321"


def test_data_statistics_tables_known_and_unknown_keys(report):
    tables = markdown_tables((report["out"] / "report.md").read_text())
    counts = _row(tables["Examples per split and variant"], **{"": "test"})
    assert counts["counterfactual"] == "121" and counts["total"] == "484"
    assert _row(tables["Examples without a counterfactual, by reason"], **{"": "no_typed_entity"})["value"] == "12"
    assert _row(tables["Answer types per split"], **{"": "train"})["LANGUAGE"] == "300"
    generic = tables["Substitute sources"]                        # unknown key, deeper nesting
    assert _row(generic, **{"": "extra.deep.x"})["value"] == "1"
    assert _row(tables["Other data statistics"], **{"": "seed"})["value"] == "0"


def test_html_is_self_contained_and_escaped(report):
    page = (report["out"] / "index.html").read_text()
    assert not re.search(r"<(script|link)\b", page)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(data).startswith(PNG_SIGNATURE) for data in images)
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    for name in ("contextual_em", "memorization_ratio", "accuracy_vs_cost", "training_curves"):
        assert (report["out"] / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
        assert f"({name}.png)" in (report["out"] / "report.md").read_text()


def test_summary_holds_key_metrics(report):
    summary = json.loads(report["summary"].read_text())
    assert list(summary) == ["full", "lora"]
    lora = summary["lora"]
    assert lora["test_counterfactual_contextual_em"] == pytest.approx(77.0)
    assert lora["seen_empty_parametric_em"] == pytest.approx(54.0)  # 40 + 2 + 7 + 5
    assert lora["seen_memorization_ratio"] == pytest.approx(37 / 87)
    assert lora["trainable_params"] == 16_384
    assert lora["checkpoint_bytes"] == 4 * 16_384 + 120
    assert lora["inference_ms_per_example"] == pytest.approx(3.3)
    assert {"peak_memory_bytes", "step_time_s", "wall_time_s", "trainable_percent"} <= set(lora)


def test_limitations_default_and_custom_notes(report):
    default = (report["out"] / "report.md").read_text().split("## Limitations", 1)[1]
    assert "T5-XXL" in default and "many-to-one" in default
    results = [load_method_results(report["results"] / m, m) for m in METHODS]
    document = build_document(results, {}, ["test"], {}, notes="First note\nwrapped.\n\nSecond note.")
    custom = render_markdown(document).split("## Limitations", 1)[1]
    assert custom.strip().splitlines() == ["- First note wrapped.", "- Second note."]
    listed = build_document(results, {}, ["test"], {}, notes=["one", "two"]).sections[-1]
    assert listed.bullets == ("one", "two")


def test_missing_metrics_names_the_file(tmp_path, cfg):
    results = _write_results(tmp_path)
    (results / "lora" / "metrics.json").unlink()
    with pytest.raises(ResultsError, match=re.escape(str(results / "lora" / "metrics.json"))):
        report_stage.run(cfg, results, _write_stats(tmp_path), tmp_path / "reports", tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_method_missing_from_results_and_missing_stats(tmp_path):
    results = _write_results(tmp_path)
    three = _config({"full": {}, "lora": {}, "ia3": {}})
    with pytest.raises(ResultsError, match=r"ia3/train\.json: missing"):
        report_stage.run(three, results, _write_stats(tmp_path), tmp_path / "r", tmp_path / "s.json")
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        report_stage.run(_config({"full": {}}), results, tmp_path / "nowhere.json", tmp_path / "r", tmp_path / "s.json")


def test_bad_curve_row_names_file_and_line(tmp_path):
    path = tmp_path / "train_curve.csv"
    path.write_text("step,train_loss,val_loss\n10,1.5,\n20,oops,1.2\n")
    with pytest.raises(ResultsError, match=r"train_curve\.csv:3: column 'train_loss'"):
        read_curve(path)
    path.write_text("step,loss\n10,1.5\n")
    with pytest.raises(ResultsError, match=r"train_curve\.csv:1: expected columns"):
        read_curve(path)


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
