"""Training memory and step time of every registered fine-tuning method on one batch.

Each method in `cfqa.methods.registry.METHOD_NAMES` is built from the same randomly initialized T5
(t5-small's shape scaled down to run on a CPU: see MODEL below; the weights do not matter for
memory or time), with its options from params.yaml (the first `methods` block that uses it,
else the block named after it). One AdamW step on the same batch is measured with
`cfqa.model.measure.training_step_memory` (parameters + gradients + optimizer state + activations
saved for backward, summed exactly; on CUDA also the allocator's peak), then a few more steps
are timed. Ratios are to `full` in the same run. A method whose module is missing or fails is
recorded with its error and the run goes on.

    .venv/bin/python benchmarks/method_memory.py [--batch-size 32] [--timed-steps 3]

Writes benchmarks/results/method_memory.json and prints a table. Exits 1 if a method failed
or LST needs more than half of full fine-tuning's memory (the LST paper saves 69 % at T5
scale).
"""
from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import transformers
from transformers import T5Config, T5ForConditionalGeneration

from cfqa import config as cfqa_config
from cfqa.io.atomic_io import write_json
from cfqa.io.logs import get_logger, setup_logging
from cfqa.model.measure import training_step_memory
from cfqa.methods.registry import METHOD_NAMES, get_method
from cfqa.methods.base import count_parameters
from cfqa.methods.options import options_record
from cfqa.io.progress import progress

RESULTS = Path(__file__).resolve().parent / "results" / "method_memory.json"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# t5-small is d_model 512, 8 heads of 64, d_ff 2048, 6 + 6 layers, 32k vocabulary; half of
# each keeps a step around a second on one CPU thread. d_kv = d_model / num_heads.
MODEL = dict(vocab_size=8192, d_model=256, num_heads=4, d_kv=64, d_ff=1024, num_layers=4,
             num_decoder_layers=4, relative_attention_num_buckets=32, dropout_rate=0.1,
             feed_forward_proj="relu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
LST_GOAL = 0.5          # LST's total step memory as a fraction of full fine-tuning's
log = get_logger("benchmarks.method_memory")


def make_batch(batch_size: int, source_length: int, target_length: int, vocab_size: int, seed: int = 0):
    """Random token ids with ragged source and target lengths (padding and -100 as in training)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, vocab_size, (batch_size, source_length), generator=generator)
    labels = torch.randint(2, vocab_size, (batch_size, target_length), generator=generator)
    source_lengths = torch.randint(source_length // 2, source_length + 1, (batch_size,), generator=generator)
    target_lengths = torch.randint(target_length // 2, target_length + 1, (batch_size,), generator=generator)
    attention_mask = (torch.arange(source_length)[None, :] < source_lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, MODEL["pad_token_id"])
    labels = labels.masked_fill(torch.arange(target_length)[None, :] >= target_lengths[:, None], -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def method_options(params_path: Path) -> dict:
    """Registry name -> options of the first params.yaml `methods` block that uses it."""
    options: dict[str, dict] = {}
    for block in cfqa_config.load([params_path]).methods.values():
        options.setdefault(block.method, block.options)
    return options


def timed_steps(model, batch, optimizer, steps: int, device: torch.device) -> list[float]:
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_method(name: str, options: dict, batch: dict, device: torch.device, timed: int) -> dict:
    spec = get_method(name)                  # a missing module raises here and is recorded
    torch.manual_seed(0)                     # the same base weights for every method
    base = T5ForConditionalGeneration(T5Config(**MODEL))
    model = spec.build(base, options).to(device)
    counts = count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    memory = training_step_memory(model, batch, optimizer)
    seconds = timed_steps(model, batch, optimizer, timed, device)
    return {
        "status": "ok",
        "options": options_record(options),
        "trainable_parameters": counts.trainable,
        "total_parameters": counts.total,
        "memory": memory.as_dict(),
        "step_seconds": {"median": statistics.median(seconds), "all": seconds},
    }


def add_ratios(results: dict[str, dict]) -> None:
    full = results.get("full", {})
    for entry in results.values():
        if entry["status"] != "ok" or full.get("status") != "ok":
            continue
        entry["ratio_to_full"] = {
            key: entry["memory"][key] / full["memory"][key] if full["memory"][key] else None
            for key in ("total_bytes", "activation_bytes", "gradient_bytes", "optimizer_state_bytes",
                        "cuda_peak_allocated_bytes") if full["memory"][key] is not None
        }
        entry["ratio_to_full"]["step_seconds"] = entry["step_seconds"]["median"] / full["step_seconds"]["median"]


def print_table(results: dict[str, dict]) -> None:
    mib = 1024 ** 2
    print(f"{'method':<16}{'trainable':>12}{'params MiB':>12}{'grads':>9}{'optim':>9}{'activ':>9}"
          f"{'total':>9}{'/full':>8}{'step s':>9}{'/full':>8}")
    for name, entry in results.items():
        if entry["status"] != "ok":
            print(f"{name:<16}error: {entry['error']}")
            continue
        memory, ratio = entry["memory"], entry.get("ratio_to_full", {})
        print(f"{name:<16}{entry['trainable_parameters']:>12,}{memory['parameter_bytes'] / mib:>12.1f}"
              f"{memory['gradient_bytes'] / mib:>9.1f}{memory['optimizer_state_bytes'] / mib:>9.1f}"
              f"{memory['activation_bytes'] / mib:>9.1f}{memory['total_bytes'] / mib:>9.1f}"
              f"{ratio.get('total_bytes', float('nan')):>8.3f}{entry['step_seconds']['median']:>9.3f}"
              f"{ratio.get('step_seconds', float('nan')):>8.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--source-length", type=int, default=96)
    parser.add_argument("--target-length", type=int, default=24)
    parser.add_argument("--timed-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--methods", nargs="+", default=list(METHOD_NAMES))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if "full" not in args.methods:
        args.methods.insert(0, "full")        # ratios need it
    configured = method_options(args.params)
    log.info("read method options from %s (%s)", args.params, sorted(configured))
    batch = {k: v.to(device) for k, v in make_batch(args.batch_size, args.source_length, args.target_length,
                                                      MODEL["vocab_size"]).items()}

    results: dict[str, dict] = {}
    for name in progress(args.methods, desc="methods", unit="method"):
        options = configured.get(name) or cfqa_config.registry_options(name, paths=[args.params])
        try:
            results[name] = measure_method(name, options, batch, device, args.timed_steps)
            log.info("%s: %.1f MiB in a step, %.3f s/step", name,
                     results[name]["memory"]["total_bytes"] / 1024 ** 2, results[name]["step_seconds"]["median"])
        except Exception as error:             # one broken method must not hide the others
            results[name] = {"status": "error", "options": options_record(options),
                             "error": f"{type(error).__name__}: {error}",
                             "traceback": traceback.format_exc(limit=4)}
            log.error("%s failed: %s", name, results[name]["error"])
        gc.collect()
    add_ratios(results)

    lst_ratio = results.get("lst", {}).get("ratio_to_full", {}).get("total_bytes")
    report = {
        "what": "memory and time of one AdamW training step per method, same batch and base model",
        "memory_measure": ("parameters + gradients + optimizer state (after the step) + activations "
                           "saved for backward (torch.autograd.graph.saved_tensors_hooks, each storage "
                           "once, parameters excluded); cuda_peak_allocated_bytes on CUDA only. "
                           "Not whole-process RSS."),
        "model": MODEL,
        "batch": {"batch_size": args.batch_size, "source_length": args.source_length,
                  "target_length": args.target_length, "real_source_tokens": int(batch["attention_mask"].sum()),
                  "real_target_tokens": int((batch["labels"] != -100).sum())},
        "optimizer": "AdamW lr 1e-4",
        "timed_steps": args.timed_steps,
        "environment": {"device": str(device), "threads": args.threads, "torch": torch.__version__,
                        "transformers": transformers.__version__, "python": platform.python_version(),
                        "machine": platform.machine(),
                        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "methods": results,
        "lst_goal": {"max_total_ratio_to_full": LST_GOAL, "lst_total_ratio_to_full": lst_ratio,
                     "met": None if lst_ratio is None else lst_ratio <= LST_GOAL},
    }
    write_json(args.output, report)
    log.info("wrote %s", args.output)
    print_table(results)
    failed = sorted(name for name, entry in results.items() if entry["status"] != "ok")
    if failed:
        log.error("methods that failed: %s", failed)
    if report["lst_goal"]["met"] is False:
        log.error("LST total memory ratio to full is %.3f, goal <= %s", lst_ratio, LST_GOAL)
    return 1 if failed or report["lst_goal"]["met"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
