"""Speed of cfqa.statistics: vectorized resampling vs a plain loop over resamples.

The report computes ~300 intervals and differences (methods × context variants × question
sets × answer types), each over seeds × questions arrays. This times one call for 3 seeds ×
250 questions with the default 2,000 resamples and 2,000 permutations, against a reference
that draws seed and question indices in a Python loop, one resample (or permutation) per
iteration, and checks that both give the same interval within Monte-Carlo error. It then times
a report-sized batch of 300 calls (a mix of all four statistics).

    .venv/bin/python benchmarks/statistics_speed.py [--repeats 5]

Writes benchmarks/results/statistics_speed.json. Exits 1 if the 300 calls take more than
GOAL_SECONDS_300 or the reference and vectorized intervals disagree.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from cfqa import statistics
from cfqa.atomic_io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "statistics_speed.json"
SEEDS, QUESTIONS = 3, 250
GOAL_SECONDS_300 = 10.0


def loop_mean_interval(scores: np.ndarray, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Reference hierarchical bootstrap: one resample per iteration, same design as the module."""
    rng = np.random.default_rng(seed)
    n_seeds, n_questions = scores.shape
    values = []
    for _ in range(resamples):
        seeds = rng.integers(0, n_seeds, n_seeds)
        questions = rng.integers(0, n_questions, n_questions)   # shared by every drawn seed
        values.append(100 * scores[np.ix_(seeds, questions)].mean())
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def loop_paired_difference(a: np.ndarray, b: np.ndarray, resamples: int, permutations: int,
                           confidence: float, seed: int) -> tuple[float, float, float]:
    """Reference paired bootstrap interval and sign-flip p-value, one draw per iteration."""
    low, high = loop_mean_interval(a - b, resamples, confidence, seed)
    rng = np.random.default_rng(seed + 1)
    per_question = (a - b).mean(axis=0)
    observed = abs(per_question.mean())
    extreme = 0
    for _ in range(permutations):
        signs = rng.choice([-1.0, 1.0], size=per_question.size)
        extreme += abs((signs * per_question).mean()) >= observed - 1e-12
    return low, high, float((extreme + 1) / (permutations + 1))


def per_call_seconds(function, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


def report_batch(rng: np.random.Generator) -> dict:
    """300 calls as the report makes them: accuracy intervals, differences to full, M_R."""
    scores = [(rng.random((SEEDS, QUESTIONS)) < rng.uniform(0.4, 0.9)).astype(float) for _ in range(10)]
    classes = [rng.choice(3, size=(SEEDS, QUESTIONS), p=[0.4, 0.4, 0.2]) for _ in range(10)]
    calls = {"mean_interval": 100, "paired_difference": 100, "ratio_interval": 40,
             "paired_ratio_difference": 40, "unpaired_ratio_difference": 20}
    seconds = {}
    for name, count in calls.items():
        start = time.perf_counter()
        for i in range(count):
            x, y = scores[i % 10], scores[(i + 1) % 10]
            c, d = classes[i % 10], classes[(i + 1) % 10]
            if name == "mean_interval":
                statistics.mean_interval(x, seed=i)
            elif name == "paired_difference":
                statistics.paired_difference(x, y, seed=i)
            elif name == "ratio_interval":
                statistics.ratio_interval(c == 0, c == 1, seed=i)
            elif name == "paired_ratio_difference":
                statistics.paired_ratio_difference(c == 0, c == 1, d == 0, d == 1, seed=i)
            else:
                statistics.unpaired_ratio_difference(c == 0, c == 1, d[:, :100] == 0, d[:, :100] == 1, seed=i)
        seconds[name] = {"calls": count, "seconds": round(time.perf_counter() - start, 3)}
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    resamples, permutations, confidence = statistics.DEFAULT_RESAMPLES, statistics.DEFAULT_PERMUTATIONS, 0.95
    rng = np.random.default_rng(0)
    a = (rng.random((SEEDS, QUESTIONS)) < 0.72).astype(float)
    b = (rng.random((SEEDS, QUESTIONS)) < 0.66).astype(float)

    vectorized_mean = per_call_seconds(lambda: statistics.mean_interval(a), args.repeats)
    loop_mean = per_call_seconds(lambda: loop_mean_interval(a, resamples, confidence, 0), args.repeats)
    vectorized_paired = per_call_seconds(lambda: statistics.paired_difference(a, b), args.repeats)
    loop_paired = per_call_seconds(lambda: loop_paired_difference(a, b, resamples, permutations, confidence, 0),
                                   args.repeats)

    # Same design, different random draws: limits agree within a few Monte-Carlo errors.
    ours, theirs = statistics.paired_difference(a, b), loop_paired_difference(a, b, resamples, permutations,
                                                                              confidence, 0)
    agreement = {"vectorized": [ours.low, ours.high, ours.p_value], "loop": list(theirs),
                 "within_tolerance": bool(abs(ours.low - theirs[0]) < 1.5 and abs(ours.high - theirs[1]) < 1.5
                                          and abs(ours.p_value - theirs[2]) < 0.03)}
    batch = report_batch(rng)
    batch_seconds = sum(entry["seconds"] for entry in batch.values())
    result = {
        "benchmark": "statistics_speed",
        "shape": {"seeds": SEEDS, "questions": QUESTIONS, "resamples": resamples, "permutations": permutations},
        "seconds_per_call": {
            "mean_interval": {"vectorized": round(vectorized_mean, 5), "loop": round(loop_mean, 5),
                              "speedup": round(loop_mean / vectorized_mean, 1)},
            "paired_difference": {"vectorized": round(vectorized_paired, 5), "loop": round(loop_paired, 5),
                                  "speedup": round(loop_paired / vectorized_paired, 1)},
        },
        "agreement_paired_difference_low_high_p": agreement,
        "report_batch_300_calls": {"by_function": batch, "total_seconds": round(batch_seconds, 2),
                                   "goal_seconds": GOAL_SECONDS_300},
        "goals": {"met": bool(batch_seconds <= GOAL_SECONDS_300 and agreement["within_tolerance"])},
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "note": "The loop reference draws one resample (or permutation) per Python iteration with numpy "
                "indexing; speedup = loop / vectorized wall time per call (median of repeats). Timings "
                "share the machine's cores with other work: see load_average_1min.",
    }
    write_json(args.output, result)
    print(f"mean_interval: {vectorized_mean * 1e3:.1f} ms vectorized, {loop_mean * 1e3:.1f} ms loop "
          f"({loop_mean / vectorized_mean:.0f}×); paired_difference: {vectorized_paired * 1e3:.1f} ms vs "
          f"{loop_paired * 1e3:.1f} ms ({loop_paired / vectorized_paired:.0f}×); 300 report calls: "
          f"{batch_seconds:.2f} s")
    return 0 if result["goals"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
