"""Where the time of one `snakemake --cores all` run went: per stage, the number of jobs, the
sum, mean and maximum of their wall times, and the CPU time Snakemake's `benchmark:` records
hold (pretrain, train, evaluate); for the whole run, the wall time from the first job's start
to the last job's end and how busy the cores were (job seconds / (wall × cores)).

Job times come from Snakemake's own log of the run (`.snakemake/log/<start>.snakemake.log`:
each job's start and finish lines, one-second resolution), so every rule is covered, not only
those with a `benchmark:` directive.

    .venv/bin/python benchmarks/pipeline_stages.py [--workdir .] [--log .snakemake/log/X.log]

Writes benchmarks/results/pipeline_stages.json (or --out).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import re
import statistics
import sys
from pathlib import Path

from cfqa.io.atomic_io import write_json

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
STARTED = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
CORES = re.compile(r"^Provided cores: (\d+)$")


def parse_log(path: Path) -> tuple[list[dict], int | None]:
    """(jobs with rule, wildcards, start and end times; the cores Snakemake was given)."""
    jobs: dict[str, dict] = {}
    stamp: dt.datetime | None = None
    pending: dict | None = None        # the job whose header lines are being read
    cores = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if match := STAMP.match(line):
            stamp = dt.datetime.strptime(" ".join(match.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif match := CORES.match(line):
            cores = int(match.group(1))
        elif match := STARTED.match(line):
            if stamp is None:
                raise ValueError(f"{path}:{number}: a job starts before any timestamp")
            pending = {"rule": match.group(1), "start": stamp, "wildcards": ""}
        elif pending is not None and (match := WILDCARDS.match(line)):
            pending["wildcards"] = match.group(1)
        elif pending is not None and (match := JOBID.match(line)):
            jobs[match.group(1)] = pending
        elif match := FINISHED.match(line):
            pending = None
            job = jobs.get(match.group(1))
            if job is None:
                raise ValueError(f"{path}:{number}: job {match.group(1)} finishes but never started")
            job["end"] = stamp
    finished = [job for job in jobs.values() if "end" in job]
    return finished, cores


def benchmark_cpu_seconds(workdir: Path) -> dict[str, float]:
    """Sum of `cpu_time` per stage over Snakemake's benchmark records under logs/benchmarks/."""
    totals: dict[str, float] = {}
    for tsv in sorted((workdir / "logs" / "benchmarks").rglob("*.tsv")):
        stage = tsv.relative_to(workdir / "logs" / "benchmarks").parts[0].removesuffix(".tsv")
        with tsv.open(newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                totals[stage] = totals.get(stage, 0.0) + float(row["cpu_time"])
    return totals


def summarize(jobs: list[dict], cores: int | None, cpu: dict[str, float]) -> dict:
    stages: dict[str, dict] = {}
    for job in jobs:
        seconds = (job["end"] - job["start"]).total_seconds()
        stages.setdefault(job["rule"], {"seconds": []})["seconds"].append(seconds)
    table = {}
    for rule, entry in sorted(stages.items(), key=lambda item: -sum(item[1]["seconds"])):
        seconds = entry["seconds"]
        table[rule] = {"jobs": len(seconds), "job_seconds_sum_s": sum(seconds),
                       "job_seconds_mean_s": round(statistics.fmean(seconds), 1), "job_seconds_max_s": max(seconds),
                       "cpu_time_sum_s": round(cpu[rule], 1) if rule in cpu else None}
    wall = (max(j["end"] for j in jobs) - min(j["start"] for j in jobs)).total_seconds() if jobs else 0.0
    busy = sum(sum(e["seconds"]) for e in stages.values())
    return {"pipeline_wall_s": wall, "cores": cores, "job_seconds_sum_s": busy,
            "cores_busy_share": round(busy / (wall * cores), 3) if wall and cores else None, "stages": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--log", type=Path, help="a Snakemake log (default: the newest under .snakemake/log)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pipeline_stages.json")
    args = parser.parse_args(argv)
    log = args.log or max((args.workdir / ".snakemake" / "log").glob("*.snakemake.log"), key=os.path.getmtime)
    jobs, cores = parse_log(log)
    result = summarize(jobs, cores, benchmark_cpu_seconds(args.workdir))
    result["log"] = log.name
    result["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                         "load_average_1min_at_end": round(os.getloadavg()[0], 2)}
    write_json(args.out, result)
    print(f"pipeline {result['pipeline_wall_s']:.0f} s wall on {cores} cores "
          f"(cores busy {result['cores_busy_share']}); wrote {args.out}")
    for rule, entry in result["stages"].items():
        print(f"  {rule:16s} {entry['jobs']:3d} jobs  {entry['job_seconds_sum_s']:7.0f} s  "
              f"mean {entry['job_seconds_mean_s']:6.1f}  max {entry['job_seconds_max_s']:5.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
