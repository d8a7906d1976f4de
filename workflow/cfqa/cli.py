"""The `cfqa` command line: one subcommand per pipeline stage, every path explicit.

Snakemake rules and DVC stages call exactly these commands.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from cfqa import config as config_module
from cfqa.logs import get_logger, setup_logging

log = get_logger("cfqa")


def _add(sub, name: str, help_text: str, paths: list[tuple[str, str]], extra=None):
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("--params", action="append", default=None, metavar="YAML",
                        help="parameter file; repeat to override key by key (default: params.yaml)")
    for flag, text in paths:
        parser.add_argument(f"--{flag}", type=Path, required=True, help=text)
    if extra:
        extra(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfqa", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="also write the stage log to this file (Snakemake's log: path)")
    sub = parser.add_subparsers(dest="command", required=True)
    def run_args(p):
        p.add_argument("--method", required=True, help="a key of params.yaml `methods`")
        p.add_argument("--seed", type=int, required=True, help="the run's seed (one of params.yaml `seeds`)")
    _add(sub, "download", "fetch or build the raw dataset (NQ simplified format)",
         [("out", "raw data directory")])
    _add(sub, "prepare", "keep questions with a short and a long answer; split",
         [("raw", "raw data directory"), ("out", "prepared data directory")])
    _add(sub, "entities", "type each answer with spaCy NER",
         [("prepared", "prepared data directory"), ("raw", "raw data directory"),
          ("out", "entities directory")])
    _add(sub, "counterfactuals", "entity substitution; factual/counterfactual/empty/random variants",
         [("prepared", "prepared data directory"), ("entities", "entities directory"),
          ("out", "variants directory"), ("stats", "data statistics JSON")])
    _add(sub, "pretrain", "tokenizer + tiny T5 (or a hub model) saved as safetensors",
         [("raw", "raw data directory"), ("out", "base model directory"),
          ("out-lm", "LM-adapted base model directory")])
    def train_args(p):
        run_args(p)
        p.add_argument("--lr-selection", type=Path, default=None, metavar="JSON",
                       help="train with the learning rate `cfqa tune` chose (results/METHOD/lr_selection.json)")
    _add(sub, "tune", "choose one method's learning rate on the validation set (short runs on a grid)",
         [("variants", "variants directory"), ("models", "models directory (base models inside)"),
          ("out", "learning-rate selection JSON (results/METHOD/lr_selection.json)")],
         lambda p: p.add_argument("--method", required=True, help="a key of params.yaml `methods`"))
    _add(sub, "train", "fine-tune one method with one seed",
         [("variants", "variants directory"), ("models", "models directory (base models inside)"),
          ("out", "trained directory of the run (models/METHOD/seedSEED)"),
          ("results", "results directory of the run (results/METHOD/seedSEED)")],
         train_args)
    _add(sub, "evaluate", "generate and score one trained run on the test and seen sets",
         [("variants", "variants directory"), ("models", "models directory (base models inside)"),
          ("model", "trained directory of the run (train's --out)"),
          ("results", "results directory of the run (train's --results)")],
         run_args)
    _add(sub, "report", "tables, plots, HTML and Markdown report, summary metrics",
         [("results", "results directory"), ("data-stats", "data statistics JSON"),
          ("out", "reports directory"), ("summary", "summary metrics JSON")])
    return parser


STAGE_MODULES = {
    "download": "cfqa.stages.download",
    "prepare": "cfqa.stages.prepare",
    "entities": "cfqa.stages.entities",
    "counterfactuals": "cfqa.stages.counterfactuals",
    "pretrain": "cfqa.stages.pretrain",
    "tune": "cfqa.stages.tune",
    "train": "cfqa.stages.train",
    "evaluate": "cfqa.stages.evaluate",
    "report": "cfqa.stages.report",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_file)
    try:
        cfg = config_module.load(args.params or [config_module.DEFAULT_PARAMS])
    except config_module.ConfigError as error:
        log.error("%s", error)
        return 2
    kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "params", "log_level", "log_file")}
    stage = importlib.import_module(STAGE_MODULES[args.command])
    started = time.perf_counter()
    log.info("stage %s: %s", args.command, " ".join(f"{k}={v}" for k, v in kwargs.items()))
    try:
        stage.run(cfg, **kwargs)
    except Exception:
        log.exception("stage %s failed", args.command)  # the traceback lands in --log-file too
        return 1
    log.info("stage %s done in %.1f s", args.command, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
