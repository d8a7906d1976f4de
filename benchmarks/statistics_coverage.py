"""Coverage and family-wise false positives of cfqa.analysis.statistics on simulated experiments, beside
the alternatives that were weighed and (optionally) the module a git commit held; and what the
recorded step-budget runs can resolve under the module's rule.

The experiments come from the generator of tests/test_statistics_coverage.py (a crossed logit
model: 214 questions with difficulty, method × question effects, a per-run effect half global
and half per answer type, seed spread in accuracy points). Measured:

* coverage of the 95 % interval of one method's mean, 3 and 8 seeds × seed SD 2, 5, 9 points;
* coverage of the paired difference of two null methods, and the family-wise rate of false
  positives when eight null methods are compared with full fine-tuning under Holm, with
  independent seeds, with seed i of every method sharing half its effect (the data order), and
  with unequal spreads (full 2 and the others 9 points, and the reverse);
* the same for the alternatives (vectorised here): a t interval on seed means alone (questions
  held fixed), the crossed variance with Satterthwaite's degrees of freedom, and an unpaired
  Welch interval on seed means (Satterthwaite or Hsu's S − 1 degrees of freedom);
* with --baseline-commit, the module that commit held, called the way its report called it
  (hierarchical bootstrap interval; "significant" as the report's rule: Holm p < 0.05 and the
  unadjusted interval excludes 0, and as the module's own rule: raw p < 0.05 and the interval);
* from benchmarks/results/step_budget.json (per-method seed means and seed SDs of 3 seeds):
  the minimum difference full − LoRA that 3 seeds detect at 80 % power, and which differences
  survive the module's rule (S − 1 degrees of freedom; the file has no per-seed values, so the
  per-seed differences' SD is taken as √(SD_a² + SD_b²), independent seeds, and the question
  term is left out: a lower bound on the standard error).

    .venv/bin/python benchmarks/statistics_coverage.py [--experiments 2000]
        [--baseline-commit COMMIT --baseline-experiments 400]

Writes benchmarks/results/statistics_coverage.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import special

from cfqa.analysis import statistics
from cfqa.io.atomic_io import write_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import test_statistics_coverage as generator  # noqa: E402  (the tests' generator: one definition)

RESULTS = Path(__file__).resolve().parent / "results" / "statistics_coverage.json"
STEP_BUDGET = Path(__file__).resolve().parent / "results" / "step_budget.json"
SEED_COUNTS = (3, 8)
SEED_SDS = (2.0, 5.0, 9.0)
# (label, seeds, full SD, others' SD, shared share of the run effect)
FAMILIES = [(f"{s} seeds, SD {sd:g}", s, sd, sd, 0.0) for s in SEED_COUNTS for sd in SEED_SDS] + [
    ("3 seeds, SD 5, seed i shared 50 %", 3, 5.0, 5.0, 0.5),
    ("3 seeds, SD 9, seed i shared 50 %", 3, 9.0, 9.0, 0.5),
    ("3 seeds, full SD 2, others SD 9", 3, 2.0, 9.0, 0.0),
    ("3 seeds, full SD 9, others SD 2", 3, 9.0, 2.0, 0.0),
]
ALPHA, FAMILY_SIZE = 0.05, 8


# ---------------------------------------------------------------------------- simulated data

def means(rng, experiments: int, seeds: int, seed_sd: float) -> tuple[np.ndarray, float]:
    scale = generator.seed_logit_scale(seed_sd)
    return 100 * generator.simulated(rng, experiments, seeds, [scale])[:, 0], generator.true_accuracy(scale)


def families(rng, experiments: int, seeds: int, full_sd: float, other_sd: float, shared: float) -> np.ndarray:
    scales = [generator.seed_logit_scale(full_sd)] + [generator.seed_logit_scale(other_sd)] * FAMILY_SIZE
    return 100 * generator.simulated(rng, experiments, seeds, scales, shared=shared)


# ---------------------------------------------------------------------------- alternatives (vectorised)

def _mean_squares(cells: np.ndarray):
    """Two-way ANOVA on the last two axes: grand mean, MS seeds, MS questions, MS residual."""
    n_seeds, n_questions = cells.shape[-2:]
    grand = cells.mean(axis=(-2, -1), keepdims=True)
    seed_means, question_means = cells.mean(axis=-1, keepdims=True), cells.mean(axis=-2, keepdims=True)
    ms_seeds = n_questions * ((seed_means - grand) ** 2).sum(axis=(-2, -1)) / (n_seeds - 1)
    ms_questions = n_seeds * ((question_means - grand) ** 2).sum(axis=(-2, -1)) / (n_questions - 1)
    residual = cells - seed_means - question_means + grand
    ms_residual = (residual ** 2).sum(axis=(-2, -1)) / ((n_seeds - 1) * (n_questions - 1))
    return grand[..., 0, 0], ms_seeds, ms_questions, ms_residual


def _satterthwaite(terms):
    variance = sum(value for value, _ in terms)
    denominator = sum(value ** 2 / df for value, df in terms)
    with np.errstate(invalid="ignore", divide="ignore"):
        return variance, np.where(denominator > 0, variance ** 2 / np.where(denominator > 0, denominator, 1), 1e9)


def seed_means_t(cells):
    """t on per-seed means, S − 1 df: the interval of the same questions asked again."""
    n_seeds, n_questions = cells.shape[-2:]
    estimate, ms_seeds, _, _ = _mean_squares(cells)
    return estimate, ms_seeds / (n_seeds * n_questions), np.full(estimate.shape, n_seeds - 1.0)


def crossed_satterthwaite(cells):
    """The module's variance with Satterthwaite's degrees of freedom for the sum."""
    n_seeds, n_questions = cells.shape[-2:]
    estimate, ms_seeds, ms_questions, ms_residual = _mean_squares(cells)
    used = ms_questions > ms_residual
    size = n_seeds * n_questions
    return (estimate, *_satterthwaite([(ms_seeds / size, n_seeds - 1),
                                       (np.where(used, ms_questions / size, 0), n_questions - 1),
                                       (np.where(used, -ms_residual / size, 0), (n_seeds - 1) * (n_questions - 1))]))


def welch(a, b, hsu: bool):
    """Unpaired on seeds (each method's own seed variance), paired on questions."""
    n_seeds, n_questions = a.shape[-2:]
    mean_a, ms_seeds_a, _, ms_residual_a = _mean_squares(a)
    mean_b, ms_seeds_b, _, ms_residual_b = _mean_squares(b)
    question_differences = a.mean(axis=-2) - b.mean(axis=-2)
    spread = question_differences.var(axis=-1, ddof=1)
    used = spread / n_questions > (ms_residual_a + ms_residual_b) / (n_seeds * n_questions)
    size = n_seeds * n_questions
    variance, df = _satterthwaite([(ms_seeds_a / size, n_seeds - 1), (ms_seeds_b / size, n_seeds - 1),
                                   (np.where(used, spread / n_questions, 0), n_questions - 1),
                                   (np.where(used, -ms_residual_a / size, 0), (n_seeds - 1) * (n_questions - 1)),
                                   (np.where(used, -ms_residual_b / size, 0), (n_seeds - 1) * (n_questions - 1))])
    return mean_a - mean_b, variance, np.full(variance.shape, n_seeds - 1.0) if hsu else df


def _covers(estimate, variance, df, truth, confidence=0.95):
    half = special.stdtrit(df, 0.5 + confidence / 2) * np.sqrt(variance)
    return float(np.mean((estimate - half <= truth) & (truth <= estimate + half)))


def _p_values(estimate, variance, df):
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(variance > 0, np.abs(estimate) / np.sqrt(variance), np.where(estimate == 0, 0, np.inf))
    return 2 * special.stdtr(df, -t)


def _holm_any(p_values) -> float:
    """Share of experiments (rows) where Holm over the columns rejects at least one."""
    m = p_values.shape[-1]
    ordered = np.sort(p_values, axis=-1)
    adjusted = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * ordered), axis=-1)
    return float(np.mean((adjusted < ALPHA).any(axis=-1)))


def alternatives(rng, experiments: int) -> dict:
    out = {"seed_means_t": {}, "crossed_satterthwaite": {}, "welch_satterthwaite": {}, "welch_hsu": {}}
    for seeds in SEED_COUNTS:
        for sd in SEED_SDS:
            cells, truth = means(rng, experiments, seeds, sd)
            key = f"{seeds} seeds, SD {sd:g}"
            out["seed_means_t"].setdefault("mean_coverage", {})[key] = _covers(*seed_means_t(cells), truth)
            out["crossed_satterthwaite"].setdefault("mean_coverage", {})[key] = _covers(
                *crossed_satterthwaite(cells), truth)
    for label, seeds, full_sd, other_sd, shared in FAMILIES:
        cells = families(rng, experiments, seeds, full_sd, other_sd, shared)
        full, others = cells[:, :1], cells[:, 1:]
        for name, (estimate, variance, df) in (
                ("crossed_satterthwaite", crossed_satterthwaite(others - full)),
                ("welch_satterthwaite", welch(others, full, hsu=False)),
                ("welch_hsu", welch(others, full, hsu=True))):
            entry = out[name]
            entry.setdefault("null_difference_coverage", {})[label] = _covers(estimate, variance, df, 0.0)
            entry.setdefault("family_wise_false_positives", {})[label] = _holm_any(_p_values(estimate, variance, df))
    return out


# ---------------------------------------------------------------------------- the module itself

def module_rates(rng, experiments: int, module=statistics) -> dict:
    out: dict = {"mean_coverage": {}, "null_difference_coverage": {}, "family_wise_false_positives": {}}
    for seeds in SEED_COUNTS:
        for sd in SEED_SDS:
            cells, truth = means(rng, experiments, seeds, sd)
            intervals = [module.mean_interval(experiment / 100) for experiment in cells]
            out["mean_coverage"][f"{seeds} seeds, SD {sd:g}"] = float(np.mean(
                [i.low <= truth <= i.high for i in intervals]))
    for label, seeds, full_sd, other_sd, shared in FAMILIES:
        cells = families(rng, experiments, seeds, full_sd, other_sd, shared) / 100
        covered, any_significant, widths = 0, 0, []
        for experiment in cells:
            differences = [module.paired_difference(other, experiment[0]) for other in experiment[1:]]
            covered += sum(d.low <= 0 <= d.high for d in differences)
            widths += [d.high - d.low for d in differences]
            any_significant += any(d.significant for d in module.decide(differences))
        out["null_difference_coverage"][label] = covered / (experiments * FAMILY_SIZE)
        out["family_wise_false_positives"][label] = any_significant / experiments
        out.setdefault("mean_interval_width_pp", {})[label] = float(np.mean(widths))
    return out


def load_module_at(commit: str):
    """cfqa/analysis/statistics.py as `commit` held it, as a module of its own."""
    source = subprocess.run(["git", "show", f"{commit}:workflow/cfqa/analysis/statistics.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "statistics_at_commit.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("statistics_at_commit", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def baseline_rates(rng, experiments: int, module) -> dict:
    """The bootstrap module as its report used it: interval from `mean_interval`, and a
    difference called significant by the report's rule (Holm p < 0.05 and the interval excludes
    0) or by the module's own field (raw permutation p < 0.05 and the interval excludes 0)."""
    out: dict = {"mean_coverage": {}, "family_wise_false_positives_report_rule": {},
                 "family_wise_false_positives_module_rule": {}}
    for seeds in SEED_COUNTS:
        for sd in SEED_SDS:
            cells, truth = means(rng, experiments, seeds, sd)
            intervals = [module.mean_interval(experiment / 100, seed=index) for index, experiment in enumerate(cells)]
            out["mean_coverage"][f"{seeds} seeds, SD {sd:g}"] = float(np.mean(
                [i.low <= truth <= i.high for i in intervals]))
    for label, seeds, full_sd, other_sd, shared in FAMILIES:
        if seeds != 3 or shared or full_sd != other_sd:
            continue
        cells = families(rng, experiments, seeds, full_sd, other_sd, shared) / 100
        report_rule = module_rule = 0
        for index, experiment in enumerate(cells):
            differences = [module.paired_difference(other, experiment[0], seed=index) for other in experiment[1:]]
            holm = module.holm_adjust([d.p_value for d in differences])
            report_rule += any(h < ALPHA and (d.low > 0 or d.high < 0) for d, h in zip(differences, holm))
            module_rule += any(d.significant for d in differences)
        out["family_wise_false_positives_report_rule"][label] = report_rule / experiments
        out["family_wise_false_positives_module_rule"][label] = module_rule / experiments
    return out


# ---------------------------------------------------------------------------- recorded runs

def step_budget_resolution(path: Path) -> dict:
    """What 3 seeds of the recorded runs resolve under the module's rule (see the docstring)."""
    recorded = json.loads(path.read_text())
    seeds = len(recorded["seeds"])
    cells = {method: {budget: entry["test_contextual_em"] for budget, entry in data["budgets"].items()}
             for method, data in recorded["methods"].items()}
    longest = str(max(recorded["steps"]))

    def compare(a, b):
        difference = a["mean_pct"] - b["mean_pct"]
        sd = math.hypot(a["seed_sd_pct"], b["seed_sd_pct"])
        standard_error = sd / math.sqrt(seeds)
        if standard_error == 0:
            p_value = 1.0 if difference == 0 else 0.0
        else:
            p_value = float(2 * special.stdtr(seeds - 1, -abs(difference) / standard_error))
        # Welch on seed means (Satterthwaite df), as the issue computed it, for comparison.
        va, vb = a["seed_sd_pct"] ** 2 / seeds, b["seed_sd_pct"] ** 2 / seeds
        welch_df = (va + vb) ** 2 / (va ** 2 / (seeds - 1) + vb ** 2 / (seeds - 1)) if va + vb else math.nan
        welch_p = float(2 * special.stdtr(welch_df, -abs(difference) / math.sqrt(va + vb))) if va + vb else math.nan
        return {"difference_pp": round(difference, 2), "per_seed_difference_sd_pp": round(sd, 2),
                "standard_error_pp": round(standard_error, 2), "p_value": p_value, "welch_p_value": welch_p}

    def family(entries: dict) -> dict:
        tested = {key: value for key, value in entries.items() if value["standard_error_pp"] > 0}
        adjusted = dict(zip(tested, statistics.holm_adjust([v["p_value"] for v in tested.values()]).tolist()))
        for key, value in entries.items():
            value["holm_p"] = adjusted.get(key)
            value["survives"] = bool(adjusted.get(key) is not None and adjusted[key] < ALPHA)
            value["family_size"] = len(tested)
        return entries

    full_minus_lora = family({variant: compare(cells["full"][longest][variant], cells["lora"][longest][variant])
                              for variant in cells["full"][longest]})
    shorter = family({f"{method} {budget} − {longest} steps, {variant}": compare(by_budget[budget][variant],
                                                                              by_budget[longest][variant])
                      for method, by_budget in cells.items() if method in ("full", "lora")
                      for budget in by_budget if budget != longest for variant in by_budget[budget]})
    detectable = {}
    for variant, entry in full_minus_lora.items():
        sd = entry["per_seed_difference_sd_pp"]
        if sd == 0:
            continue
        detectable[variant] = {
            "per_seed_difference_sd_pp": sd,
            "mde_3_seeds_pp_no_correction": round(statistics.minimum_detectable_difference(
                sd / math.sqrt(seeds), seeds - 1), 1),
            f"mde_3_seeds_pp_holm_{FAMILY_SIZE}": round(statistics.minimum_detectable_difference(
                sd / math.sqrt(seeds), seeds - 1, tests=FAMILY_SIZE), 1),
            **{f"seeds_for_{d}_pp_holm_{FAMILY_SIZE}": statistics.seeds_needed(d, seed_sd=sd, tests=FAMILY_SIZE)
               for d in (10, 5)},
            **{f"seeds_for_{d}_pp_no_correction": statistics.seeds_needed(d, seed_sd=sd) for d in (10, 5)},
        }
    return {"seeds": seeds, "steps": longest, "full_minus_lora": full_minus_lora,
            "shorter_budget_minus_longest": shorter, "minimum_detectable_full_minus_lora": detectable}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--baseline-commit", help="also measure cfqa/analysis/statistics.py as this commit held it")
    parser.add_argument("--baseline-experiments", type=int, default=400)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    baseline = load_module_at(args.baseline_commit) if args.baseline_commit else None
    result = {
        "benchmark": "statistics_coverage",
        "generator": {"questions": generator.QUESTIONS, "mean_logit": generator.MEAN_LOGIT,
                      "question_sd_logit": generator.QUESTION_SD,
                      "method_question_sd_logit": generator.METHOD_QUESTION_SD,
                      "answer_types": generator.ANSWER_TYPES,
                      "seed_sd": "SD in accuracy points of a run's expected accuracy over the question population"},
        "experiments": args.experiments, "nominal": 0.95, "alpha": ALPHA, "family_size": FAMILY_SIZE,
        "step_budget": step_budget_resolution(STEP_BUDGET),
    }
    # Written after every part: a long run that stops keeps what it measured.
    parts = [("module", lambda: module_rates(np.random.default_rng(1), args.experiments)),
             ("alternatives", lambda: alternatives(np.random.default_rng(2), args.experiments))]
    if baseline is not None:
        parts.append(("baseline", lambda: {"commit": args.baseline_commit, "experiments": args.baseline_experiments,
                                           **baseline_rates(np.random.default_rng(3), args.baseline_experiments,
                                                            baseline)}))
    for name, measure in parts:
        result[name] = measure()
        result["machine"] = {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                             "seconds": round(time.perf_counter() - started, 1)}
        write_json(args.output, result)
        print(f"{name}: {json.dumps(result[name], indent=1)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
