"""Why does test contextual EM vary so much between seeds, and which training recipe gives the
lowest seed variance per CPU-second? Measured as ratios against today's recipe, in one run.

Primary endpoint: `test` counterfactual contextual EM (the model must answer what the edited
context says). Each (recipe, method, seed) run fine-tunes from the embedded default's backbone
exactly as `cfqa train` does (same data, batches, loop; one torch thread) and, at every
validation point, generates on the validation and test counterfactual rows with the run's
current weights and with an exponential moving average (EMA) of them. One run therefore serves
several checkpoint rules at once:

  - best_val_loss: the weights of the lowest validation loss (what `cfqa train` keeps today);
  - best_val_em: the weights of the highest validation counterfactual contextual EM;
  - last: the final weights;
  - ema_last / ema_best_val_em: the EMA weights, final or at the best validation EM.

Recipes change the training itself (learning rate, steps, warmup, batch size), each a separate
set of runs. Per recipe × rule × method: the seed mean, the seed SD and a t-interval (S - 1
degrees of freedom) of the primary endpoint, the CPU seconds a run costs (training plus what
its rule needs at validation; the test generations made only for this measurement are not
counted), and the ratios to today's recipe (today, best_val_loss): SD, CPU seconds, and
variance x cost (SD^2 x CPU-s: the squared standard error of a method's mean bought per
CPU-second budget; lower is better). Also: the SD of the per-seed difference full - other method
on the same seeds (seeds share the data order), the seed SD along each run's validation points
(is the spread shrinking as training converges?), and the per-seed EM per answer type (is the
spread one answer type that a seed learns to copy or not?).

The data and backbones come from a finished run's folder (data/variants, models/base*), e.g.
the data stages and `cfqa pretrain` run once with the default params.yaml into --workdir. Runs
are cached as JSON under --workdir/seed_variance/ (a rerun skips finished runs):

    nice -n 10 .venv/bin/python benchmarks/seed_variance.py --workdir /tmp/cfqa-run \\
        --methods full lora adapter --recipes today --seeds 0 1 2 3 4 [--analyze-only]

Writes benchmarks/results/seed_variance.json (or --out), with the backbone's shape. Another
backbone size: `cfqa pretrain` with its `pretrain` block into another workdir's models/, the same
data/variants beside it. benchmarks/results/seed_variance_d128_half_lr.json (the default's
backbone) and seed_variance_d64_half_lr.json (half its width) were run side by side, one process
per core, at half the configured rate:

    .venv/bin/python benchmarks/seed_variance.py --workdir W64 --params P64 --methods full lora \\
        --recipes half_lr --seeds 0 1 2 3 --out benchmarks/results/seed_variance_d64_half_lr.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import integrate, stats
from torch.optim.optimizer import register_optimizer_step_post_hook

from cfqa.io.atomic_io import write_json
from cfqa.training.backbone import build_method_model
from cfqa.config import PROJECT_ROOT, MethodConfig, load
from cfqa.evaluation.generation import generate_texts
from cfqa.evaluation.scoring import prediction_record
from cfqa.scoring.answer_metrics import exact_match
from cfqa.formats import format_input
from cfqa.methods.base import trainable_state_dict
from cfqa.training.batches import text_pairs, tokenize_pairs, variant_rows
from cfqa.training.loop import fine_tune, make_accelerator

PRIMARY = ("test", "counterfactual")
EMA_DECAY = 0.99            # half-life ~69 optimizer steps: the last ~5-10 % of a run
EVAL_EVERY = 250


@dataclass(frozen=True)
class Recipe:
    """Changes to a method's configured training: `train` keys replaced, lr multiplied."""
    description: str
    train: dict = field(default_factory=dict)
    lr_factor: float = 1.0


RECIPES = {
    "today": Recipe("params.yaml as it is: configured lr, 1500 steps, warmup 20, batch 16"),
    "double_lr": Recipe("twice the learning rate", lr_factor=2.0),
    "steps1000_double_lr": Recipe("1000 steps, twice the learning rate", {"max_steps": 1000}, 2.0),
    "half_lr": Recipe("half the learning rate", lr_factor=0.5),
    "half_lr_warmup150": Recipe("half the learning rate, warmup 150 steps", {"warmup_steps": 150}, 0.5),
    "steps1000": Recipe("1000 steps (schedule decays to zero at 1000)", {"max_steps": 1000}),
    "steps750": Recipe("750 steps", {"max_steps": 750}),
    "steps750_double_lr": Recipe("750 steps, twice the learning rate", {"max_steps": 750}, 2.0),
    "batch32_steps750": Recipe("batch 32, 750 steps (same examples seen)", {"batch_size": 32, "max_steps": 750}),
}
RULES = ("best_val_loss", "best_val_em", "last", "ema_last", "ema_best_val_em")
REFERENCE = ("today", "best_val_loss")


def run_config(cfg, method: str, seed: int, recipe: Recipe) -> MethodConfig:
    mcfg = cfg.method(method, seed)
    train = dataclasses.replace(mcfg.train, **recipe.train, lr=mcfg.train.lr * recipe.lr_factor,
                                eval_every=EVAL_EVERY, early_stopping_patience=0)
    return dataclasses.replace(mcfg, train=train)


class Ema:
    """An exponential moving average of the trainable weights, updated after every optimizer step
    (a global step post-hook: the loop's optimizer is created inside fine_tune)."""

    def __init__(self, model, decay: float):
        self.model, self.decay = model, decay
        self.average = {k: v.detach().clone() for k, v in trainable_state_dict(model).items()}
        self.handle = register_optimizer_step_post_hook(self.update)

    @torch.no_grad()
    def update(self, *_):
        for name, tensor in trainable_state_dict(self.model).items():
            self.average[name].lerp_(tensor, 1 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchanges the model's trainable weights with the average (twice restores them)."""
        parameters = dict(self.model.named_parameters())
        for name, tensor in self.average.items():
            current = parameters[name].detach().clone()
            parameters[name].copy_(tensor)
            self.average[name] = current

    def close(self) -> None:
        self.handle.remove()


def correctness(model, tokenizer, rows: list[dict], mcfg: MethodConfig, ecfg) -> list[int]:
    texts = generate_texts(model, tokenizer, [format_input(r["question"], r["context"]) for r in rows],
                           batch_size=ecfg.batch_size, max_input_length=mcfg.train.max_input_length,
                           max_new_tokens=ecfg.max_new_tokens, num_beams=ecfg.num_beams,
                           device=torch.device("cpu"), desc="measure").texts
    records = [prediction_record(r, "x", t) for r, t in zip(rows, texts)]
    return [int(exact_match(rec.contextual, rec.gold_contextual)) for rec in records]


def train_one(cfg, workdir: Path, method: str, seed: int, recipe: Recipe) -> dict:
    mcfg = run_config(cfg, method, seed, recipe)
    tcfg = mcfg.train
    variants, models = workdir / "data" / "variants", workdir / "models"
    model, tokenizer, _ = build_method_model(mcfg, models)
    train = tokenize_pairs(tokenizer, text_pairs(variant_rows(variants, "train", tcfg.mixture), tcfg.target_format),
                           tcfg.max_input_length, tcfg.max_target_length)
    validation = tokenize_pairs(tokenizer, text_pairs(variant_rows(variants, "validation", tcfg.mixture),
                                                      tcfg.target_format), tcfg.max_input_length, tcfg.max_target_length)
    rows = {"val": variant_rows(variants, "validation", ("counterfactual",)),
            "test": variant_rows(variants, "test", ("counterfactual",))}
    types = [r.get("answer_type") for r in rows["test"]]
    points: list[dict] = []
    measured = {"selection_s": 0.0, "test_s": 0.0}
    ema = Ema(model, EMA_DECAY)

    def measure(point: dict) -> None:
        """Both weight sets on both sets of rows; the validation generation of one weight set is
        what a rule selecting on validation EM costs, the rest is measurement only."""
        entry = {"step": point["step"], "val_loss": point["val_loss"]}
        for which in ("raw", "ema"):
            if which == "ema":
                ema.swap()
            started = time.process_time()
            val = correctness(model, tokenizer, rows["val"], mcfg, cfg.evaluate)
            middle = time.process_time()
            test = correctness(model, tokenizer, rows["test"], mcfg, cfg.evaluate)
            measured["selection_s" if which == "raw" else "test_s"] += middle - started
            measured["test_s"] += time.process_time() - middle
            if which == "ema":
                ema.swap()
            entry[which] = {"val_em": 100 * float(np.mean(val)), "test_em": 100 * float(np.mean(test)),
                            "test_correct": "".join(map(str, test))}
        points.append(entry)
        model.train()

    started = time.process_time()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            fine_tune(model, train, validation, tcfg, pad_id=tokenizer.pad_token_id,
                      checkpoint_dir=Path(scratch) / "checkpoint", fingerprint="seed-variance",
                      accelerator=make_accelerator(tcfg), on_validation=measure)
    finally:
        ema.close()
    total = time.process_time() - started
    return {"method": method, "seed": seed, "lr": tcfg.lr, "train": dataclasses.asdict(tcfg),
            "cpu_s": {"training_and_loss_validation": total - measured["selection_s"] - measured["test_s"],
                      "validation_em": measured["selection_s"], "measurement_only": measured["test_s"]},
            "points": points, "test_answer_types": types}


def select(run: dict, rule: str) -> dict:
    """The validation point a rule keeps, and which weights (raw or ema)."""
    points = run["points"]
    if rule == "best_val_loss":
        return {**min(points, key=lambda p: p["val_loss"])["raw"]}      # the earliest on ties, as the loop
    if rule == "best_val_em":
        return {**max(points, key=lambda p: (p["raw"]["val_em"], -p["step"]))["raw"]}
    if rule == "last":
        return points[-1]["raw"]
    if rule == "ema_last":
        return points[-1]["ema"]
    if rule == "ema_best_val_em":
        return max(points, key=lambda p: (p["ema"]["val_em"], -p["step"]))["ema"]
    raise ValueError(rule)


def rule_cpu_s(run: dict, rule: str) -> float:
    cpu = run["cpu_s"]["training_and_loss_validation"]
    return cpu + (run["cpu_s"]["validation_em"] if "val_em" in rule else 0.0)


def t_interval(values: list[float]) -> dict:
    n = len(values)
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1)) if n > 1 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else float("nan")
    return {"n": n, "mean_pct": round(mean, 2), "sd_pct": round(sd, 2), "low_pct": round(mean - half, 2),
            "high_pct": round(mean + half, 2), "values_pct": [round(v, 1) for v in values]}


# The default's resolution target: a 10-point difference on the primary endpoint, 80 % power,
# two-sided, Holm over the 8 comparisons with full fine-tuning (its first step is Bonferroni's
# 0.05 / 8, so that level is a conservative stand-in for any one comparison).
TARGET_DIFFERENCE_PCT = 10.0
COMPARISONS = 8
ALPHA, POWER = 0.05, 0.8


def power(difference: float, sd: float, seeds: int, paired: bool, comparisons: int = COMPARISONS) -> float:
    """Power of the seed-level t-test: paired (per-seed differences, S - 1 degrees of freedom,
    `sd` their SD) or two-sample with equal seeds (2S - 2 degrees of freedom, `sd` each
    method's seed SD), from the noncentral t distribution."""
    if seeds < 2 or sd <= 0:
        return float("nan")
    alpha = ALPHA / comparisons
    df = seeds - 1 if paired else 2 * seeds - 2
    noncentrality = difference / (sd / math.sqrt(seeds) if paired else sd * math.sqrt(2 / seeds))
    critical = stats.t.ppf(1 - alpha / 2, df)
    exact = float(stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality))
    if math.isfinite(exact):
        return exact

    # scipy's nct returns NaN at large noncentrality: P(|Z + nc| > c * sqrt(V / df)), V ~ chi2(df)
    def rejected(v: float) -> float:
        bound = critical * math.sqrt(v / df)
        return (stats.norm.sf(bound - noncentrality) + stats.norm.cdf(-bound - noncentrality)) * stats.chi2.pdf(v, df)

    return float(integrate.quad(rejected, 0, np.inf, limit=200)[0])


def seeds_needed(difference: float, sd: float, paired: bool, limit: int = 200) -> int | None:
    """The fewest seeds per method reaching POWER, or None beyond `limit`."""
    for seeds in range(2, limit + 1):
        if power(difference, sd, seeds, paired) >= POWER:
            return seeds
    return None


def detectable_difference(sd: float, seeds: int, paired: bool) -> float:
    """The smallest difference (points) detected with POWER at `seeds` seeds."""
    if seeds < 2 or not sd > 0:
        return float("nan")
    low, high = 0.0, 200.0
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if power(middle, sd, seeds, paired) < POWER else (low, middle)
    return high


def resolution(sd: float, paired: bool) -> dict:
    return {"sd_pct": round(sd, 2), "test": "paired t on per-seed differences" if paired else "two-sample t (Welch, equal seeds)",
            "seeds_for_10_points": seeds_needed(TARGET_DIFFERENCE_PCT, sd, paired),
            "seeds_for_5_points": seeds_needed(TARGET_DIFFERENCE_PCT / 2, sd, paired),
            "detectable_pct_at_seeds": {str(n): round(detectable_difference(sd, n, paired), 1) for n in (3, 5, 8, 10)}}


def load_runs(workdir: Path) -> dict:
    runs: dict = {}
    for path in sorted((workdir / "seed_variance").glob("*/*/seed*.json")):
        recipe, method = path.parts[-3], path.parts[-2]
        runs.setdefault(recipe, {}).setdefault(method, []).append(json.loads(path.read_text()))
    return runs


def by_type(run: dict, rule: str) -> dict[str, float]:
    correct = select(run, rule)["test_correct"]
    groups: dict[str, list[int]] = {}
    for answer_type, bit in zip(run["test_answer_types"], correct):
        groups.setdefault(str(answer_type), []).append(int(bit))
    return {t: 100 * float(np.mean(v)) for t, v in sorted(groups.items())}


def analyze(runs: dict) -> dict:
    reference = {}
    ref_recipe, ref_rule = REFERENCE
    for method, method_runs in runs.get(ref_recipe, {}).items():
        values = [select(r, ref_rule)["test_em"] for r in method_runs]
        reference[method] = {"sd": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                             "cpu_s": float(np.mean([rule_cpu_s(r, ref_rule) for r in method_runs]))}
    table = []
    for recipe, methods in runs.items():
        for method, method_runs in methods.items():
            method_runs = sorted(method_runs, key=lambda r: r["seed"])
            for rule in RULES:
                values = [select(r, rule)["test_em"] for r in method_runs]
                cpu = float(np.mean([rule_cpu_s(r, rule) for r in method_runs]))
                entry = {"recipe": recipe, "method": method, "rule": rule, "lr": method_runs[0]["lr"],
                         "seeds": [r["seed"] for r in method_runs], "cpu_s_per_run": round(cpu, 1),
                         "test_counterfactual_em": t_interval(values)}
                ref = reference.get(method)
                if ref and len(values) > 1 and ref["sd"] > 0:
                    sd = entry["test_counterfactual_em"]["sd_pct"]
                    entry["vs_today"] = {"sd_ratio": round(sd / ref["sd"], 3), "cpu_ratio": round(cpu / ref["cpu_s"], 3),
                                         "variance_x_cost_ratio": round((sd ** 2 * cpu) / (ref["sd"] ** 2 * ref["cpu_s"]), 3)}
                table.append(entry)
    # the spread along each run: seed SD of raw test EM at every validation point
    trajectory = {}
    for recipe, methods in runs.items():
        for method, method_runs in methods.items():
            steps = [p["step"] for p in method_runs[0]["points"]]
            trajectory[f"{recipe}/{method}"] = [
                {"step": s, **{k: v for k, v in t_interval([next(p for p in r["points"] if p["step"] == s)["raw"]["test_em"]
                                                            for r in method_runs]).items() if k in ("mean_pct", "sd_pct")},
                 "val_loss_mean": round(float(np.mean([next(p for p in r["points"] if p["step"] == s)["val_loss"]
                                                       for r in method_runs])), 4)}
                for s in steps]
    # the paired difference full - method on the same seeds
    paired = []
    for recipe, methods in runs.items():
        if "full" not in methods:
            continue
        full = {r["seed"]: r for r in methods["full"]}
        for method, method_runs in methods.items():
            if method == "full":
                continue
            for rule in RULES:
                common = [r for r in method_runs if r["seed"] in full]
                if len(common) < 2:
                    continue
                diffs = [select(full[r["seed"]], rule)["test_em"] - select(r, rule)["test_em"] for r in common]
                a = [select(full[r["seed"]], rule)["test_em"] for r in common]
                b = [select(r, rule)["test_em"] for r in common]
                paired.append({"recipe": recipe, "method": method, "rule": rule, "seeds": len(common),
                               "full_minus_method": t_interval(diffs),
                               "correlation": round(float(np.corrcoef(a, b)[0, 1]), 3) if np.std(a) and np.std(b) else None})
    types = {f"{recipe}/{method}/{rule}": {str(r["seed"]): {k: round(v, 1) for k, v in by_type(r, rule).items()}
                                           for r in sorted(method_runs, key=lambda r: r["seed"])}
             for recipe, methods in runs.items() for method, method_runs in methods.items()
             for rule in ("best_val_loss", "best_val_em")}
    # what each recipe and rule could resolve: from each method's seed SD (two-sample) and from
    # the SD of the per-seed difference with full (paired)
    for row in table:
        row["resolution_two_sample"] = resolution(row["test_counterfactual_em"]["sd_pct"], paired=False)
    for row in paired:
        row["resolution_paired"] = resolution(row["full_minus_method"]["sd_pct"], paired=True)
    return {"table": table, "trajectory": trajectory, "paired_with_full": paired, "by_answer_type": types,
            "resolution_target": {"difference_pct": TARGET_DIFFERENCE_PCT, "power": POWER, "alpha": ALPHA,
                                  "comparisons": COMPARISONS, "per_comparison_alpha": ALPHA / COMPARISONS}}


BACKBONE_KEYS = ("d_model", "d_ff", "num_heads", "num_layers", "num_decoder_layers", "vocab_size")


def backbone(workdir: Path) -> dict:
    """The shape of the backbone the runs fine-tuned (models/base/config.json): results from
    backbones of other sizes are told apart by it."""
    config = json.loads((workdir / "models" / "base" / "config.json").read_text())
    return {key: config[key] for key in BACKBONE_KEYS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a run's folder with data/variants and models/")
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--recipes", nargs="+", default=["today"], choices=sorted(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "seed_variance.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load([args.params])
    if not args.analyze_only:
        for seed in args.seeds:              # seeds outermost: a partial run stays balanced
            for method in args.methods:
                for recipe in args.recipes:
                    path = args.workdir / "seed_variance" / recipe / method / f"seed{seed}.json"
                    if path.exists():
                        continue
                    started = time.perf_counter()
                    result = train_one(cfg, args.workdir, method, seed, RECIPES[recipe])
                    write_json(path, result)
                    print(f"{recipe} {method} seed {seed}: test cf EM {select(result, 'best_val_loss')['test_em']:.1f} "
                          f"(best val loss), {select(result, 'best_val_em')['test_em']:.1f} (best val EM), "
                          f"{result['cpu_s']['training_and_loss_validation']:.0f} CPU-s, "
                          f"{time.perf_counter() - started:.0f} s wall", flush=True)
    runs = load_runs(args.workdir)
    result = {"primary_endpoint": "test counterfactual contextual EM (%)", "reference": list(REFERENCE),
              "backbone": backbone(args.workdir), "ema_decay": EMA_DECAY, "eval_every": EVAL_EVERY,
              "recipes": {name: dataclasses.asdict(recipe) for name, recipe in RECIPES.items() if name in runs},
              "rules": list(RULES), **analyze(runs),
              "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(),
                          "load_average_1min": round(os.getloadavg()[0], 2)}}
    write_json(args.out, result)
    for row in result["table"]:
        em = row["test_counterfactual_em"]
        print(f"{row['recipe']:>20} {row['method']:>8} {row['rule']:>16}: {em['mean_pct']:5.1f} sd {em['sd_pct']:5.2f} "
              f"n={em['n']} cpu {row['cpu_s_per_run']:6.0f}  {row.get('vs_today', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
