"""Stage `cfqa report`: every method's results for every seed (results/{method}/seed{seed}/)
-> reports/report.md, reports/index.html (self-contained), reports/*.png and
results/summary.json (every method's key numbers) and results/headline.json (the run root's
DVC metric, cfqa.analysis.headline). The same results give byte-identical outputs."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import msgspec

from cfqa.io.atomic_io import atomic_open
from cfqa.config import Config
from cfqa.contract import read_data_stats, write_record, write_run_headline
from cfqa.analysis.headline import headline as run_headline_of, run_headline
from cfqa.layout import REPORT_FIGURE_FILE, REPORT_HTML_FILE, REPORT_MARKDOWN_FILE, RunLayout
from cfqa.io.logs import get_logger
from cfqa.io.redact import redact
from cfqa.report import figures, plots
from cfqa.report.aggregate import aggregate
from cfqa.report.document import build_document
from cfqa.report.inputs import load_report_results
from cfqa.report.render import render_html, render_markdown
from cfqa.report.summary import build_summary

log = get_logger("cfqa.report")


def _overview(cfg: Config) -> dict[str, str]:
    if cfg.pretrain.hub_id:
        model = f"`{cfg.pretrain.hub_id}`"
    else:
        p = cfg.pretrain
        if p.family == "gpt_neo":
            layers = f"{p.num_layers} layer" + ("s" if p.num_layers != 1 else "")
            model = (f"GPT-Neo (decoder-only) pretrained here with next-token prediction (d_model {p.d_model}, "
                     f"{layers}, {p.steps} steps)")
        else:
            model = (f"T5 pretrained here with span corruption (d_model {p.d_model}, "
                     f"{p.num_layers}+{p.num_decoder_layers} layers, {p.steps} steps)")
    return {
        "data source": f"`{cfg.data.source}`",
        "base model": model,
        "training target": f"`{cfg.train.target_format}`",
        "MLflow experiment": f"`{cfg.tracking.experiment}` in `{redact(cfg.tracking.uri)}`",
    }


def run(cfg: Config, results: Path, data_stats: Path, out: Path, summary: Path,
        report_notes: str | Sequence[str] | None = None, headline: Path | None = None) -> None:
    write_report(cfg, results, data_stats, out, summary, seeds=cfg.seeds, report_notes=report_notes,
                 headline=headline)


def write_headline(path: Path, results: Path, method_results) -> None:
    """results/headline.json: per method of this run root (not of `report.compare_runs`' roots,
    which write their own), the seed means of its runs' headline numbers."""
    own = {r.name: [run_headline_of(run.train, run.metrics) for run in r.runs] for r in method_results
           if r.runs and r.runs[0].directory.resolve().is_relative_to(Path(results).resolve())}
    write_run_headline(path, run_headline(own))
    log.info("wrote %s (%d methods: seed mean and interval of their headline numbers)", path, len(own))


def write_report(cfg: Config, results: Path, data_stats: Path, out: Path, summary: Path, *,
                 seeds: Sequence[int], report_notes: str | Sequence[str] | None = None,
                 headline: Path | None = None) -> None:
    results, data_stats, out, summary = map(Path, (results, data_stats, out, summary))
    started = time.perf_counter()
    # Other runs whose results stand beside this run's (report.compare_runs), never this run's own.
    others = [other for other in (RunLayout(root).results for root in cfg.report.compare_runs)
              if other.resolve() != results.resolve()]
    method_results = load_report_results(results, list(cfg.methods), seeds, others=others)
    log.info("read %d methods x %d seeds from %s/{method}/seed{seed}/%s", len(method_results), len(seeds), results,
             "".join(f" and every evaluated run under {other}/" for other in others))
    stats = msgspec.to_builtins(read_data_stats(data_stats))
    stats.pop("schema_version")
    log.info("read %s", data_stats)
    agg = aggregate(method_results)
    log.info("intervals and paired tests in %.1f s", time.perf_counter() - started)

    endpoint = cfg.report.primary_endpoint
    images = {name: plots.png_bytes(figure)
              for name, figure in figures.build_figures(method_results, agg, endpoint).items()}
    notes = report_notes if report_notes is not None else (list(cfg.report.notes) or None)
    document = build_document(method_results, agg, stats, _overview(cfg), notes, endpoint=endpoint)
    markdown, page = render_markdown(document), render_html(document, images)
    # Everything is computed before the first write: a failure leaves no partial report.
    for name, data in images.items():
        figure = out / REPORT_FIGURE_FILE.format(figure=name)
        with atomic_open(figure, "wb") as handle:
            handle.write(data)
        log.info("wrote %s", figure)
    with atomic_open(out / REPORT_MARKDOWN_FILE) as handle:
        handle.write(markdown)
    with atomic_open(out / REPORT_HTML_FILE) as handle:
        handle.write(page)
    log.info("wrote %s and %s (%d methods, sets %s)", out / REPORT_MARKDOWN_FILE, out / REPORT_HTML_FILE,
             len(method_results), ", ".join(agg.sets) or "none")
    write_record(summary, build_summary(method_results, agg))
    if headline is not None:
        write_headline(Path(headline), results, method_results)
    log.info("wrote %s in %.1f s", summary, time.perf_counter() - started)
