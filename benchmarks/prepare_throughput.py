"""Throughput and peak memory of the prepare stage on a synthetic NQ-simplified file.

Writes a gzip JSONL file of synthetic NQ simplified records (50-100 KB of document_text each,
HTML tags, long-answer candidates, NQ-like answer rates) of at least --size-gib compressed into
a temporary directory, then runs, each in its own subprocess over the same files:
  - `prepare`: cfqa.stages.prepare.run (decode, select, extract, split, write);
  - `plain`:   a plain `gzip.open` + `json.loads` loop that only decodes every line.
It reports MB/s (uncompressed and compressed), records/s, CPU seconds and peak RSS (the
subprocess's own VmHWM), the speed ratios, and writes
benchmarks/results/prepare_throughput.json. The temporary directory is removed at the end.

With --baseline DIR (the `workflow` folder of another version, e.g. extracted by
`git archive HEAD~1 workflow | tar -x -C /tmp/base`), `prepare` also runs with that version's
package, alternating with this one for --rounds rounds over the same files; the medians and
their ratio go into the results. On a shared machine this before/after ratio is the number to
trust: both sides see the same load.

    .venv/bin/python benchmarks/prepare_throughput.py [--size-gib 1.0] [--keep-dir DIR]
        [--baseline DIR --rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from isal import igzip

from cfqa.io.atomic_io import write_json
from cfqa.nq.manifest import write_manifest

RESULTS = Path(__file__).resolve().parent / "results" / "prepare_throughput.json"
DOCUMENT_POOL = 48          # distinct documents; each is larger than gzip's 32 KB window,
                            # so reusing them does not make the file compress better
DEV_RECORDS = 500
GOAL_SPEEDUP = 3.0
GOAL_PEAK_RSS_MB = 1024

# NQ train rates (Kwiatkowski et al. 2019): ~49% no long answer, ~36% a short answer too,
# ~1% yes/no. The rest have a long answer only.
P_NO_LONG, P_LONG_ONLY, P_YES_NO = 0.49, 0.14, 0.01


def _vocabulary(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    frequency = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4,
                          2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])
    frequency /= frequency.sum()
    words = ["".join(rng.choice(letters, size=rng.integers(2, 11), p=frequency)).capitalize()
             if i % 7 == 0 else "".join(rng.choice(letters, size=rng.integers(1, 9), p=frequency))
             for i in range(20_000)]
    # Punctuation, numbers and the unicode NQ has inside tokens (a no-break space included).
    words[:12] = [",", ".", "the", "of", "and", "in", "(", ")", "1990", "caf\u00e9", "2\u00a0km", "\u2013"]
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.05  # Zipf-like
    return words, weights / weights.sum()


def _document(rng, words, weights, target_chars: int) -> tuple[str, list[dict]]:
    tokens = ["Title", "-", "Wikipedia", "<H1>", "Title", "</H1>", "Jump", "to", ":", "navigation", ",", "search"]
    candidates, chars = [], 0
    while chars < target_chars:
        block = [words[i] for i in rng.choice(len(words), size=int(rng.integers(20, 180)), p=weights)]
        start, kind = len(tokens), rng.random()
        if kind < 0.72:
            tokens += ["<P>", *block, "</P>"]
        elif kind < 0.86:
            tokens.append("<Ul>")
            for i in range(0, len(block), 12):
                tokens += ["<Li>", *block[i:i + 12], "</Li>"]
            tokens.append("</Ul>")
        else:
            tokens += ["<Table>", "<Tr>", '<Th_colspan="2">', block[0], "</Th>", "</Tr>"]
            for i in range(1, len(block), 6):
                tokens += ["<Tr>", "<Td>", *block[i:i + 3], "</Td>", "<Td>", *block[i + 3:i + 6], "</Td>", "</Tr>"]
            tokens.append("</Table>")
        candidates.append({"start_token": start, "top_level": True, "end_token": len(tokens)})
        chars += sum(len(t) + 1 for t in tokens[start:])
    return " ".join(tokens), candidates


def _annotation(rng, candidates: list[dict], text_tokens: list[str]) -> dict:
    annotation = {"yes_no_answer": "NONE",
                  "long_answer": {"start_token": -1, "candidate_index": -1, "end_token": -1},
                  "short_answers": [], "annotation_id": int(rng.integers(1 << 62))}
    draw = rng.random()
    if draw < P_NO_LONG:
        return annotation
    index = int(rng.integers(len(candidates)))
    start, end = candidates[index]["start_token"], candidates[index]["end_token"]
    annotation["long_answer"] = {"start_token": start, "candidate_index": index, "end_token": end}
    if draw < P_NO_LONG + P_LONG_ONLY:
        return annotation
    if draw < P_NO_LONG + P_LONG_ONLY + P_YES_NO:
        annotation["yes_no_answer"] = "YES"
        return annotation
    text_positions = [i for i in range(start + 1, end - 1) if not text_tokens[i].startswith("<")]
    first = text_positions[int(rng.integers(len(text_positions)))]
    annotation["short_answers"] = [{"start_token": first, "end_token": min(first + int(rng.integers(1, 4)), end)}]
    return annotation


def write_synthetic(path: Path, *, min_compressed_bytes: int = 0, records: int = 0,
                    annotations_per_record: int = 1, seed: int = 0) -> dict:
    """A synthetic NQ simplified file; stops after `records` lines or at the compressed size."""
    rng = np.random.default_rng(seed)
    words, weights = _vocabulary(rng)
    pool = []
    for _ in range(DOCUMENT_POOL):
        text, candidates = _document(rng, words, weights, int(rng.integers(50_000, 100_000)))
        # json.dumps escapes non-ASCII as \uXXXX, like the published NQ files.
        pool.append((text.split(" "), candidates, json.dumps(text).encode(), json.dumps(candidates).encode()))
    written = uncompressed = 0
    with open(path, "wb") as raw, igzip.open(raw, "wb", compresslevel=1) as out:
        while (records and written < records) or (not records and raw.tell() < min_compressed_bytes):
            tokens, candidates, text_json, candidates_json = pool[int(rng.integers(DOCUMENT_POOL))]
            annotations = [_annotation(rng, candidates, tokens) for _ in range(annotations_per_record)]
            question = " ".join(words[i] for i in rng.choice(len(words), size=8, p=weights))
            line = b"".join([
                b'{"document_text": ', text_json,
                b', "long_answer_candidates": ', candidates_json,
                b', "question_text": ', json.dumps(question).encode(),
                b', "annotations": ', json.dumps(annotations).encode(),
                b', "document_url": "https://en.wikipedia.org//w/index.php?title=Synthetic&oldid=',
                str(written).encode(), b'", "example_id": ', str(int(rng.integers(1 << 62))).encode(), b"}\n"])
            out.write(line)
            written += 1
            uncompressed += len(line)
    return {"records": written, "uncompressed_bytes": uncompressed, "compressed_bytes": path.stat().st_size}



_PEAK_RSS = """
import json, resource, sys, time

def peak_rss_kib():
    # VmHWM is this address space's own high-water mark; ru_maxrss would also count the
    # parent's pages at fork time (Linux carries it across exec).
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

_PREPARE_CHILD = _PEAK_RSS + """
from pathlib import Path
from cfqa import config
from cfqa.stages import prepare
cfg = config.load([sys.argv[3]])
before = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
prepare.run(cfg, Path(sys.argv[1]), Path(sys.argv[2]))
seconds = time.perf_counter() - started
stats = json.loads((Path(sys.argv[2]) / "stats.json").read_text())
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu_seconds = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_kib": peak_rss_kib(),
                  "records": sum(s["records"] for s in stats["splits"].values()),
                  "kept": {k: s["kept"] for k, s in stats["splits"].items()}}))
"""

_PLAIN_CHILD = _PEAK_RSS + """
import gzip
before = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
records = 0
for name in sys.argv[1:]:
    with gzip.open(name, "rb") as lines:
        for line in lines:
            json.loads(line)
            records += 1
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu_seconds = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_kib": peak_rss_kib(),
                  "records": records}))
"""


def _run_child(code: str, *args: str, package_dir: Path | None = None) -> dict:
    env = dict(os.environ, CI="true")  # no progress bars in the measured runs
    if package_dir is not None:  # ahead of the editable install of this checkout
        env["PYTHONPATH"] = str(package_dir)
    done = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True,
                          text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _figures(run: dict, uncompressed: int, compressed: int) -> dict:
    seconds = run["seconds"]
    return {"seconds": round(seconds, 2), "cpu_seconds": round(run["cpu_seconds"], 2),
            "uncompressed_mb_per_s": round(uncompressed / seconds / 1e6, 1),
            "compressed_mb_per_s": round(compressed / seconds / 1e6, 1),
            "records_per_s": round(run["records"] / seconds, 1),
            "peak_rss_mb": round(run["peak_rss_kib"] / 1024, 1),
            **{k: v for k, v in run.items() if k == "kept"}}


def _compare_with_baseline(raw: Path, work: Path, args, uncompressed: int, compressed: int) -> dict:
    """Median prepare figures of the baseline and of this version, run alternately."""
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    for _ in range(args.rounds):
        for name, package_dir in (("baseline", args.baseline.resolve()), ("this", None)):
            out = work / f"prepared-{name}"
            runs[name].append(_run_child(_PREPARE_CHILD, str(raw), str(out), args.params, package_dir=package_dir))
            shutil.rmtree(out, ignore_errors=True)
    medians = {name: {key: statistics.median(run[key] for run in done)
                      for key in ("seconds", "cpu_seconds", "peak_rss_kib")} | {"records": done[0]["records"]}
               for name, done in runs.items()}
    return {"rounds": args.rounds, "baseline_code": args.baseline_label or str(args.baseline),
            **{name: _figures(median, uncompressed, compressed) for name, median in medians.items()},
            "seconds_ratio_this_vs_baseline": round(medians["this"]["seconds"] / medians["baseline"]["seconds"], 3),
            "cpu_seconds_ratio_this_vs_baseline": round(
                medians["this"]["cpu_seconds"] / medians["baseline"]["cpu_seconds"], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=1.0, help="compressed size of the synthetic train file")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--keep-dir", type=Path, default=None, help="work here and keep the files")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a `workflow` folder (holding cfqa/ and schemas/) of the version to compare with")
    parser.add_argument("--baseline-label", default=None, help="what --baseline is, for the results file")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with --baseline")
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "cfqa" / "stages" / "prepare.py").is_file():
        parser.error(f"--baseline {args.baseline}: expected a `workflow` folder holding cfqa/stages/prepare.py")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` removes the big file

    work = args.keep_dir or Path(tempfile.mkdtemp(prefix="cfqa-prepare-bench-"))
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        train = write_synthetic(raw / "train.jsonl.gz", min_compressed_bytes=int(args.size_gib * 2**30), seed=0)
        dev = write_synthetic(raw / "dev.jsonl.gz", records=DEV_RECORDS, annotations_per_record=5, seed=1)
        write_manifest(raw, "synthetic")     # prepare checks every file against it, as after download
        print(f"wrote {train['records']} + {dev['records']} records, "
              f"{(train['uncompressed_bytes'] + dev['uncompressed_bytes']) / 1e9:.2f} GB uncompressed, "
              f"{(train['compressed_bytes'] + dev['compressed_bytes']) / 1e9:.2f} GB gzip "
              f"in {time.perf_counter() - started:.0f} s", flush=True)
        uncompressed = train["uncompressed_bytes"] + dev["uncompressed_bytes"]
        compressed = train["compressed_bytes"] + dev["compressed_bytes"]

        plain = _figures(_run_child(_PLAIN_CHILD, str(raw / "train.jsonl.gz"), str(raw / "dev.jsonl.gz")),
                         uncompressed, compressed)
        print("plain gzip + json.loads:", plain, flush=True)
        prepared = _figures(_run_child(_PREPARE_CHILD, str(raw), str(work / "prepared"), args.params),
                            uncompressed, compressed)
        print("cfqa prepare:", prepared, flush=True)
        if args.baseline is not None:
            comparison = _compare_with_baseline(raw, work, args, uncompressed, compressed)
            print("before/after:", comparison, flush=True)
    finally:
        if args.keep_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    speedup = plain["seconds"] / prepared["seconds"]
    cpu_speedup = plain["cpu_seconds"] / prepared["cpu_seconds"]
    result = {
        "benchmark": "prepare_throughput",
        "input": {"train": train, "dev": dev, "document_text_chars": "50,000-100,000 per record"},
        "plain_gzip_json_loads": plain,
        "prepare": prepared,
        "speedup_vs_plain": round(speedup, 2),
        "cpu_time_ratio_vs_plain": round(cpu_speedup, 2),
        "goals": {"speedup_at_least": GOAL_SPEEDUP, "peak_rss_mb_below": GOAL_PEAK_RSS_MB,
                  "met": speedup >= GOAL_SPEEDUP and prepared["peak_rss_mb"] < GOAL_PEAK_RSS_MB},
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "load_average_1min": round(os.getloadavg()[0], 2), "platform": platform.platform()},
        "note": "The plain loop only decodes each line; prepare also selects, extracts, splits and "
                "writes. speedup_vs_plain is wall clock (prepare inflates in a second thread, so it "
                "gains from a free core); cpu_time_ratio_vs_plain compares CPU seconds of all threads. "
                "Measured on a shared machine: see load_average_1min.",
    }
    if args.baseline is not None:
        result["before_after"] = comparison
    write_json(args.results, result)
    print(f"speedup {speedup:.2f}x wall, {cpu_speedup:.2f}x CPU time; wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
