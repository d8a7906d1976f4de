"""What length-grouped batches do to accuracy on the embedded world, with seeds and intervals.

Each method is trained with every seed under each `train.batching` (random, length,
stratified; cfqa.training.batches) and evaluated; everything else is the embedded default
(params.yaml). Per method and batching: the padded share of the run's batch positions, how
often a batch holds one variant only, the mean step time (CPU seconds), and test contextual
EM per variant as a seed mean; per grouped batching its paired difference from random batches
of the same seed, with a t-interval over the per-seed differences (S − 1 degrees of freedom:
the seed is the unit of replication; questions are fixed, so the question sampling is not in
the interval).

Runs use the real CLI (`cfqa train`, `cfqa evaluate`) on the data and backbones built once by
the real stages into --workdir (download … pretrain on params.yaml), from a copy of the code
taken when the script starts (edits made while it runs change nothing), two runs at a time:

    nice -n 10 .venv/bin/python benchmarks/batch_grouping.py --workdir /tmp/cfqa-grouping \\
        --methods full lora --batchings random length stratified [--analyze-only]

Writes benchmarks/results/batch_grouping.json (or --out); runs already evaluated are reused.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from cfqa.scoring.answer_metrics import exact_match
from cfqa.io.atomic_io import write_json
from cfqa.config import PROJECT_ROOT, load
from cfqa.contract import read_predictions
from cfqa.formats import VARIANTS
from cfqa.training.batches import (collate, padding_share, text_pairs, tokenize_pairs, training_batches,
                                   variant_rows, variant_strata)

SEEDS = (0, 1, 2)
DATA_STAGES = ("download", "prepare", "entities", "counterfactuals", "pretrain")
RESULTS = Path(__file__).resolve().parent / "results" / "batch_grouping.json"


def snapshot_code(workdir: Path) -> Path:
    """A copy of the package, schema and params.yaml: the runs' code does not move under them."""
    code = workdir / "code"
    if not code.exists():
        for part in ("workflow/cfqa", "workflow/schemas"):
            shutil.copytree(PROJECT_ROOT / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(PROJECT_ROOT / "params.yaml", code / "params.yaml")
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True)
        (code / "COMMIT").write_text(f"{commit.stdout.strip()}{' (dirty)' if dirty.stdout.strip() else ''}\n")
    return code


def cli(code: Path, workdir: Path, stage: str, args: list[str], log: Path) -> float:
    """Runs one stage; returns the CPU seconds its process used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "cfqa.cli", "--log-file", str(log), stage, *args], cwd=workdir, check=True,
                   env={**os.environ, "CI": "true", "PYTHONPATH": str(code / "workflow")}, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def build_data(code: Path, workdir: Path) -> None:
    params = ["--params", str(code / "params.yaml")]
    paths = {"download": ["--out", "data/raw"],
             "prepare": ["--raw", "data/raw", "--out", "data/prepared"],
             "entities": ["--prepared", "data/prepared", "--raw", "data/raw", "--out", "data/entities"],
             "counterfactuals": ["--prepared", "data/prepared", "--entities", "data/entities", "--out",
                                 "data/variants", "--stats", "data/stats.json"],
             "pretrain": ["--raw", "data/raw", "--out", "models/base", "--out-lm", "models/base_lm"]}
    for stage in DATA_STAGES:
        if stage == "pretrain" and (workdir / "models" / "base").is_dir():
            continue
        if stage != "pretrain" and (workdir / "data" / "stats.json").exists():
            continue
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        cli(code, workdir, stage, params + paths[stage], workdir / "logs" / f"{stage}.log")


def run_dir(workdir: Path, batching: str, method: str, seed: int) -> Path:
    return workdir / "runs" / batching / method / f"seed{seed}"


def overrides(workdir: Path, batching: str) -> Path:
    path = workdir / f"batching-{batching}.yaml"
    path.write_text(yaml.safe_dump({"train": {"batching": batching}}))
    return path


def train_and_evaluate(code: Path, workdir: Path, batching: str, method: str, seed: int) -> str:
    directory = run_dir(workdir, batching, method, seed)
    if (directory / "res" / "metrics.json").exists():
        return f"reused {directory}"
    directory.mkdir(parents=True, exist_ok=True)
    common = ["--params", str(code / "params.yaml"), "--params", str(overrides(workdir, batching)),
              "--variants", "data/variants", "--models", "models", "--method", method, "--seed", str(seed)]
    cpu = {}
    for stage, extra in (("train", ["--out", str(directory / "model")]),
                         ("evaluate", ["--model", str(directory / "model")])):
        cpu[stage] = cli(code, workdir, stage, [*common, *extra, "--results", str(directory / "res")],
                         directory / f"{stage}.log")
    write_json(directory / "cpu_seconds.json", cpu)
    return f"done {directory} ({cpu['train']:.0f} + {cpu['evaluate']:.0f} CPU s)"


def em_by_seed(workdir: Path, batching: str, method: str, variant: str, question_set: str) -> np.ndarray | None:
    """Per seed: contextual EM (%) on `question_set`'s `variant` rows."""
    values = []
    for seed in SEEDS:
        path = run_dir(workdir, batching, method, seed) / "res" / "predictions.jsonl"
        if not path.exists():
            return None
        cells = [float(exact_match(row.contextual, row.gold_contextual)) for row in read_predictions(path)
                 if row.set == question_set and row.variant == variant]
        values.append(100.0 * float(np.mean(cells)))
    return np.array(values)


def t_interval(differences: np.ndarray, confidence: float = 0.95) -> dict:
    """Mean of per-seed paired differences with a Student t interval on S − 1 degrees of freedom."""
    n = len(differences)
    mean = float(np.mean(differences))
    sd = float(np.std(differences, ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n))
    return {"difference_pct": round(mean, 2), "low_pct": round(mean - half, 2), "high_pct": round(mean + half, 2),
            "per_seed_pct": [round(float(d), 2) for d in differences], "seed_sd_pct": round(sd, 2)}


def batch_mix(code_params: Path, workdir: Path, method: str, batching: str) -> dict:
    """Over one run's micro-batches: padded share of positions, single-variant share, mean width."""
    from cfqa.training.backbone import backbone_dir
    from transformers import AutoTokenizer

    cfg = load([code_params, overrides(workdir, batching)])
    mcfg = cfg.method(method, SEEDS[0])
    tcfg = mcfg.train
    tokenizer = AutoTokenizer.from_pretrained(backbone_dir(workdir / "models", mcfg.backbone))
    rows = variant_rows(workdir / "data" / "variants", "train", tcfg.mixture)
    examples = tokenize_pairs(tokenizer, text_pairs(rows, tcfg.target_format), tcfg.max_input_length,
                              tcfg.max_target_length)
    strata = variant_strata(rows)
    sampler = training_batches(examples, tcfg.batch_size, tcfg.seed, tcfg.batching, tcfg.group_batches, strata)
    index_of = {id(example): i for i, example in enumerate(examples)}
    real = positions = single = 0
    steps = tcfg.max_steps * tcfg.grad_accum_steps
    for step in range(steps):
        batch = sampler(step)
        r, p = padding_share(collate(batch, tokenizer.pad_token_id), tokenizer.pad_token_id)
        real, positions = real + r, positions + p
        single += len({strata[index_of[id(e)]] for e in batch}) == 1
    return {"padding_share_pct": round(100 * (1 - real / positions), 1),
            "single_variant_batches_pct": round(100 * single / steps, 1)}


def analyze(code: Path, workdir: Path, methods: list[str], batchings: list[str]) -> dict:
    result: dict = {}
    for method in methods:
        entry: dict = {}
        for batching in batchings:
            records = [run_dir(workdir, batching, method, seed) / "res" / "train.json" for seed in SEEDS]
            if not all(r.exists() for r in records):
                continue
            # Plain JSON: the runs may have been written by the code of an earlier commit.
            trained = [json.loads(r.read_text()) for r in records]
            cpu = [json.loads((r.parent.parent / "cpu_seconds.json").read_text()) for r in records]
            block: dict = {
                "step_time_s_mean": round(float(np.mean([t["cost"]["step_time_s"] for t in trained])), 4),
                "train_cpu_s_mean": round(float(np.mean([c["train"] for c in cpu])), 1),
                "evaluate_cpu_s_mean": round(float(np.mean([c["evaluate"] for c in cpu])), 1),
                "best_val_loss": [round(t["best_val_loss"], 4) for t in trained],
                **batch_mix(code / "params.yaml", workdir, method, batching),
                "test_contextual_em_pct": {}, "seen_contextual_em_pct": {},
            }
            for question_set in ("test", "seen"):
                for variant in VARIANTS:
                    values = em_by_seed(workdir, batching, method, variant, question_set)
                    block[f"{question_set}_contextual_em_pct"][variant] = {
                        "mean": round(float(np.mean(values)), 2), "per_seed": [round(float(v), 2) for v in values]}
            if batching != "random" and "random" in entry:
                block["against_random"] = {
                    question_set: {variant: t_interval(em_by_seed(workdir, batching, method, variant, question_set)
                                                       - em_by_seed(workdir, "random", method, variant, question_set))
                                   for variant in VARIANTS}
                    for question_set in ("test", "seen")}
                block["best_val_loss_ratio_to_random"] = [
                    round(a / b, 4) for a, b in zip(block["best_val_loss"], entry["random"]["best_val_loss"])]
            entry[batching] = block
        result[method] = entry
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="holds (or receives) data/, models/ and the runs")
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--batchings", nargs="+", default=["random", "length", "stratified"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    code = snapshot_code(workdir)
    started = time.perf_counter()
    if not args.analyze_only:
        build_data(code, workdir)
        jobs = [(b, m, s) for m in args.methods for s in SEEDS for b in args.batchings]
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(train_and_evaluate, code, workdir, b, m, s) for b, m, s in jobs]
            for future in concurrent.futures.as_completed(futures):
                print(future.result(), flush=True)
    result = {"seeds": list(SEEDS), "code": (code / "COMMIT").read_text().strip(),
              "interval": "mean of per-seed paired differences (grouped - random), Student t with S-1 df, 95 %",
              "methods": analyze(code, workdir, args.methods, args.batchings),
              "machine": {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)},
              "wall_time_s": round(time.perf_counter() - started, 1)}
    write_json(args.out, result)
    print(json.dumps(result["methods"], indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
