"""Stage `cfqa report`: every method's results -> reports/report.md, reports/index.html
(self-contained), reports/*.png and results/summary.json (a DVC metric)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import msgspec

from cfqa.atomic_io import atomic_open
from cfqa.config import Config
from cfqa.contract import read_data_stats, write_record
from cfqa.logs import get_logger
from cfqa.report import plots
from cfqa.report.document import build_document
from cfqa.report.inputs import evaluation_sets, load_method_results
from cfqa.report.render import render_html, render_markdown
from cfqa.report.summary import build_summary

log = get_logger("cfqa.report")


def _overview(cfg: Config) -> dict[str, str]:
    if cfg.pretrain.hub_id:
        model = f"`{cfg.pretrain.hub_id}`"
    else:
        p = cfg.pretrain
        model = (f"T5 pretrained here (d_model {p.d_model}, {p.num_layers}+{p.num_decoder_layers} "
                 f"layers, {p.steps} steps)")
    return {
        "data source": f"`{cfg.data.source}`",
        "base model": model,
        "training target": f"`{cfg.train.target_format}`",
        "MLflow experiment": f"`{cfg.tracking.experiment}` in `{cfg.tracking.uri}`",
    }


def run(cfg: Config, results: Path, data_stats: Path, out: Path, summary: Path,
        report_notes: str | Sequence[str] | None = None) -> None:
    results, data_stats, out, summary = map(Path, (results, data_stats, out, summary))
    method_results = []
    for name in cfg.methods:
        loaded = load_method_results(results / name, name)
        log.info("read %s/{train,metrics}.json%s", results / name,
                 "" if loaded.curve else " (no train_curve.csv: its curve is skipped)")
        method_results.append(loaded)
    stats = msgspec.to_builtins(read_data_stats(data_stats))
    stats.pop("schema_version")
    log.info("read %s", data_stats)

    sets = evaluation_sets(method_results)
    images = {name: plots.png_bytes(figure)
              for name, figure in plots.build_figures(method_results, sets).items()}
    for name, data in images.items():
        with atomic_open(out / f"{name}.png", "wb") as handle:
            handle.write(data)
        log.info("wrote %s", out / f"{name}.png")

    notes = report_notes if report_notes is not None else (list(cfg.report.notes) or None)
    document = build_document(method_results, stats, sets, _overview(cfg), notes)
    with atomic_open(out / "report.md") as handle:
        handle.write(render_markdown(document))
    with atomic_open(out / "index.html") as handle:
        handle.write(render_html(document, images))
    log.info("wrote %s and %s (%d methods, sets %s)", out / "report.md", out / "index.html",
             len(method_results), ", ".join(sets) or "none")
    write_record(summary, build_summary(method_results))
    log.info("wrote %s", summary)
