"""What fewer training steps cost in accuracy: methods trained for several step budgets with
every seed, each run evaluated; per budget the seed mean of `test` contextual EM per variant
with its 95 % interval (seeds and questions, cfqa.analysis.statistics), each shorter budget against the
longest as a paired difference (same seeds, same questions), and the training time per run.

The pipeline's wall time is almost all training (27 runs of 1500 steps with three seeds), so a
shorter pipeline means fewer steps; this measures what that buys and what it costs.

Runs use the real CLI (`cfqa train`, `cfqa evaluate`) on the data and backbones of a finished
run in --workdir (data/variants, models/base*), with the learning rate each method is
configured with (or --lr METHOD=VALUE, e.g. what `tune` chose), two runs at a time:

    .venv/bin/python benchmarks/step_budget.py --workdir /tmp/cfqa-steps --steps 750 1500 \\
        --methods full lora [--lr prompt=0.9] [--analyze-only]

Writes benchmarks/results/step_budget.json (or --out); runs already evaluated are reused.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from cfqa.scoring.answer_metrics import exact_match
from cfqa.io.atomic_io import write_json
from cfqa.config import PROJECT_ROOT
from cfqa.contract import read_predictions, read_train_record
from cfqa.formats import VARIANTS
from cfqa.analysis.statistics import mean_interval, paired_difference

SEEDS = (0, 1, 2)


def run_dir(workdir: Path, steps: int, method: str, seed: int) -> Path:
    return workdir / "runs" / f"s{steps}" / method / f"seed{seed}"


def overrides(workdir: Path, steps: int, lrs: dict[str, float]) -> Path:
    path = workdir / f"steps{steps}.yaml"
    path.write_text(yaml.safe_dump({"train": {"max_steps": steps},
                                    "methods": {m: {"train": {"lr": lr}} for m, lr in lrs.items()}}))
    return path


def train_and_evaluate(workdir: Path, params: list[Path], steps: int, method: str, seed: int) -> str:
    directory = run_dir(workdir, steps, method, seed)
    if (directory / "res" / "metrics.json").exists():
        return f"reused {directory}"
    directory.mkdir(parents=True, exist_ok=True)
    common = [arg for p in params for arg in ("--params", str(p))] + [
        "--variants", str(workdir / "data" / "variants"), "--models", str(workdir / "models"),
        "--method", method, "--seed", str(seed)]
    for stage, extra in (("train", ["--out", str(directory / "model")]),
                         ("evaluate", ["--model", str(directory / "model")])):
        subprocess.run([sys.executable, "-m", "cfqa.cli", "--log-file", str(directory / f"{stage}.log"), stage,
                        *common, *extra, "--results", str(directory / "res")],
                       cwd=workdir, check=True, env={**os.environ, "CI": "true"}, stdout=subprocess.DEVNULL)
    return f"done {directory}"


def em_matrix(workdir: Path, steps: int, method: str, variant: str) -> np.ndarray | None:
    """seeds x questions: 1 where the contextual answer matches on `test`, questions by id."""
    rows = []
    for seed in SEEDS:
        path = run_dir(workdir, steps, method, seed) / "res" / "predictions.jsonl"
        if not path.exists():
            return None
        cells = sorted((row.id, float(exact_match(row.contextual, row.gold_contextual)))
                       for row in read_predictions(path) if row.set == "test" and row.variant == variant)
        rows.append([value for _, value in cells])
    return np.array(rows)


def interval_dict(interval) -> dict:
    return {"mean_pct": round(interval.estimate, 2), "low_pct": round(interval.low, 2),
            "high_pct": round(interval.high, 2), "seed_sd_pct": round(interval.seed_sd, 2)}


def analyze(workdir: Path, steps: list[int], methods: list[str]) -> dict:
    longest = max(steps)
    result: dict = {}
    for method in methods:
        entry: dict = {"budgets": {}, "against_longest": {}}
        for budget in steps:
            times = [read_train_record(run_dir(workdir, budget, method, seed) / "res" / "train.json", method)
                     .cost.train_time_s for seed in SEEDS
                     if (run_dir(workdir, budget, method, seed) / "res" / "train.json").exists()]
            cells = {v: em_matrix(workdir, budget, method, v) for v in VARIANTS}
            if any(c is None for c in cells.values()):
                continue
            entry["budgets"][str(budget)] = {
                "runs": len(SEEDS), "train_time_s_mean": round(float(np.mean(times)), 1),
                "test_contextual_em": {v: interval_dict(mean_interval(c)) for v, c in cells.items()}}
            longest_cells = {v: em_matrix(workdir, longest, method, v) for v in VARIANTS}
            if budget != longest and all(c is not None for c in longest_cells.values()):
                entry["against_longest"][str(budget)] = {}
                for variant, cell in cells.items():
                    d = paired_difference(cell, longest_cells[variant])
                    entry["against_longest"][str(budget)][variant] = {
                        "difference_pct": round(d.difference, 2), "low_pct": round(d.low, 2),
                        "high_pct": round(d.high, 2), "p_value": round(d.p_value, 4)}
        result[method] = entry
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a finished run's folder (data/, models/)")
    parser.add_argument("--steps", type=int, nargs="+", default=[750, 1500])
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--lr", action="append", default=[], metavar="METHOD=VALUE")
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "step_budget.json")
    args = parser.parse_args(argv)
    lrs = {key: float(value) for key, value in (item.split("=", 1) for item in args.lr)}
    if not args.analyze_only:
        jobs = [(budget, method, seed) for seed in SEEDS for method in args.methods for budget in args.steps]
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(train_and_evaluate, args.workdir,
                                   [PROJECT_ROOT / "params.yaml", overrides(args.workdir, budget, lrs)], budget, m, s)
                       for budget, m, s in jobs]
            for future in concurrent.futures.as_completed(futures):
                print(future.result(), flush=True)
    result = {"seeds": list(SEEDS), "steps": args.steps, "learning_rates": lrs or "as configured",
              "methods": analyze(args.workdir, args.steps, args.methods),
              "machine": {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}}
    write_json(args.out, result)
    print(json.dumps(result["methods"], indent=1)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
