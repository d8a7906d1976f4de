"""Training and validation cost on the embedded default's data, before and after three changes,
as ratios measured in one run with the two settings interleaved (the machine's cores are shared,
so absolute times move with the load; ratios taken side by side do not):

  - batches: random batches (a seeded permutation per epoch cut into consecutive batches:
    `train.batching: random`) vs length-grouped batches (`LengthGroupedBatches` with
    GROUPED = 25 batches per sorted chunk, `train.batching: length`: it cut padding and step
    time; its effect on accuracy is measured by batch_grouping.py). Measured: the share of padded
    positions over a whole run's batches (inputs and labels), how mixed the batches' variants
    are, and the mean optimizer-step time of `fine_tune` for `full` and `lora` over the first
    `--steps` steps;
  - validation: `validation_loss` over the validation set in its file order (before) vs
    sorted by length (after), at the training batch size, and sorted at 4x the batch size;
    the loss values must agree (the token-weighted mean does not depend on the batching);
  - LST generation: the uncached greedy loop (both decoders rerun over the whole prefix at
    every token, as before) vs `LadderSideModel.generate` with its caches, through the
    evaluate stage's `generate_texts` on the test set's inputs; the texts must be equal.

Times are CPU seconds of this process (`time.process_time`, patched in for the loop's and the
generation's wall clock) with torch on the configured single thread: on cores shared with other
work the wall clock mostly measures the neighbours.

The data and backbone are built once with the real stages (download, prepare, entities,
counterfactuals, pretrain on params.yaml) into --workdir, or reused from there.

    .venv/bin/python benchmarks/training_speed.py --workdir /tmp/cfqa-speed [--steps 100] [--repeats 3]

Writes benchmarks/results/training_speed.json; exits 1 if validation losses or LST texts differ.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from cfqa import cli
from cfqa.io.atomic_io import write_json
from cfqa.training.backbone import build_method_model
from cfqa.config import PROJECT_ROOT, load
from cfqa.evaluation import generation
from cfqa.evaluation.generation import generate_texts
from cfqa.formats import VARIANTS, format_input
from cfqa.io.logs import get_logger, setup_logging
from cfqa.training import loop as training_loop
from cfqa.training.batches import (LengthGroupedBatches, collate, padding_share, text_pairs,
                                   tokenize_pairs, variant_rows)

RESULTS = Path(__file__).resolve().parent / "results" / "training_speed.json"
METHODS = ("full", "lora")
log = get_logger("benchmarks.training_speed")


def random_batches(examples, batch_size: int, seed: int):
    """The sampler before length grouping: epoch e is a permutation seeded by (seed, e), cut
    into consecutive batches."""
    per_epoch = max(len(examples) // batch_size, 1)

    def batch(index: int):
        epoch, position = divmod(index, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(examples))
        return [examples[i] for i in order[position * batch_size:(position + 1) * batch_size]]
    return batch


def file_order(examples, indices=None):
    return np.arange(len(examples)) if indices is None else indices


BEFORE = {"batches": random_batches, "validation_order": file_order}
CPU_CLOCK = types.SimpleNamespace(perf_counter=time.process_time)


def build_data(workdir: Path, params: Path) -> None:
    stages = [
        ("download", "--out", "data/raw"),
        ("prepare", "--raw", "data/raw", "--out", "data/prepared"),
        ("entities", "--prepared", "data/prepared", "--raw", "data/raw", "--out", "data/entities"),
        ("counterfactuals", "--prepared", "data/prepared", "--entities", "data/entities", "--out",
         "data/variants", "--stats", "data/stats.json"),
        ("pretrain", "--raw", "data/raw", "--out", "models/base", "--out-lm", "models/base_lm"),
    ]
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        for command, *args in stages:
            if cli.main([command, "--params", str(params), *args]) != 0:
                raise SystemExit(f"cfqa {command} failed in {workdir}")
    finally:
        os.chdir(previous)


def method_config(cfg, name: str, seed: int):
    """cfg.method(name, seed), or cfg.method(name) where the config has no seed argument."""
    try:
        return cfg.method(name, seed)
    except TypeError:
        return cfg.method(name)


def tokenized(tokenizer, variants: Path, split: str, tcfg):
    rows = variant_rows(variants, split, tcfg.mixture)
    return tokenize_pairs(tokenizer, text_pairs(rows, tcfg.target_format), tcfg.max_input_length,
                          tcfg.max_target_length)


def variant_of_examples(examples, variants: Path, split: str, tcfg) -> dict[int, str]:
    """id(example) -> its variant; variant_rows reads the mixture's files in order."""
    names = [v for v in tcfg.mixture for _ in variant_rows(variants, split, (v,))]
    return {id(example): name for example, name in zip(examples, names, strict=True)}


def padding(sampler, steps: int, pad_id: int, variant_of: dict[int, str]) -> dict:
    """Padding over `steps` batches, and how mixed their variants (factual, counterfactual,
    empty, random) are: the mean share of a batch's most common variant, and the share of
    batches holding one variant only."""
    real = padded = 0
    majority, single = [], 0
    for index in range(steps):
        batch = sampler(index)
        r, p = padding_share(collate(batch, pad_id), pad_id)
        real, padded = real + r, padded + p
        counts = collections.Counter(variant_of[id(example)] for example in batch)
        majority.append(max(counts.values()) / len(batch))
        single += len(counts) == 1
    return {"real_tokens": real, "padded_positions": padded, "padding_share": round(1 - real / padded, 4),
            "majority_variant_share_mean": round(statistics.mean(majority), 3),
            "single_variant_batches_share": round(single / steps, 3)}


GROUPED = 25
STEP_SETTINGS = {"random": "random", "grouped_option": "length"}   # train.batching of each setting


def timed_fine_tune(mcfg, models: Path, train, validation, steps: int, setting: str) -> float:
    """Mean step time of `steps` optimizer steps of fine_tune (one validation, at the end)."""
    model, tokenizer, _ = build_method_model(mcfg, models)
    tcfg = dataclasses.replace(mcfg.train, max_steps=steps, eval_every=10 * steps, early_stopping_patience=0,
                               batching=STEP_SETTINGS[setting], group_batches=GROUPED)
    with tempfile.TemporaryDirectory() as checkpoints, mock.patch.object(training_loop, "time", CPU_CLOCK):
        result = training_loop.fine_tune(model, train, validation, tcfg, pad_id=tokenizer.pad_token_id,
                                         checkpoint_dir=Path(checkpoints) / "run", fingerprint="speed",
                                         accelerator=training_loop.make_accelerator(tcfg))
    return result.step_time_s


def patched(before: bool, target, name: str, replacement):
    return mock.patch.object(target, name, replacement) if before else contextlib.nullcontext()


def timed_validation(model, validation, tcfg, batch_size: int, pad_id: int, before: bool) -> tuple[float, float]:
    accelerator = training_loop.make_accelerator(tcfg)
    with patched(before, training_loop, "length_order", BEFORE["validation_order"]):
        started = time.process_time()
        loss = training_loop.validation_loss(model, validation, batch_size, pad_id, accelerator)
    return time.process_time() - started, loss


@torch.no_grad()
def uncached_lst_generate(model, input_ids, attention_mask=None, max_new_tokens=20, num_beams=1, do_sample=False):
    """LadderSideModel's greedy decoding before the caches: both decoders over the whole prefix
    at every generated token."""
    eos = model.config.eos_token_id
    eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=input_ids.device)
    encoded = model.encode(input_ids, attention_mask)
    generated = input_ids.new_full((input_ids.shape[0], 1), model.config.decoder_start_token_id)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        next_ids = model.decode(generated, encoded, attention_mask)[:, -1].argmax(-1)
        next_ids = next_ids.masked_fill(finished, model.config.pad_token_id)
        generated = torch.cat([generated, next_ids[:, None]], dim=1)
        finished |= torch.isin(next_ids, eos_ids)
        if finished.all():
            break
    return generated


def ratio(after: list[float], before: list[float]) -> float:
    return round(statistics.median(after) / statistics.median(before), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="holds (or receives) data/ and models/base")
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per timed fine_tune")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lst-examples", type=int, default=256, help="test inputs generated by LST")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    setup_logging()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (args.workdir / "models" / "base").is_dir():
        build_data(args.workdir, args.params.resolve())
    variants, models = args.workdir / "data" / "variants", args.workdir / "models"
    cfg = load([args.params])
    seed = 0
    ok = True
    result: dict = {"batching_default": cfg.train.batching, "group_batches_option": GROUPED,
                    "steps_timed": args.steps, "repeats": args.repeats, "methods": {}}

    for name in METHODS:
        mcfg = method_config(cfg, name, seed)
        torch.set_num_threads(mcfg.train.threads)
        _, tokenizer, _ = build_method_model(mcfg, models)
        pad_id = tokenizer.pad_token_id
        train = tokenized(tokenizer, variants, "train", mcfg.train)
        validation = tokenized(tokenizer, variants, "validation", mcfg.train)
        run_steps = mcfg.train.max_steps * mcfg.train.grad_accum_steps
        variant_of = variant_of_examples(train, variants, "train", mcfg.train)
        entry: dict = {
            "train_examples": len(train), "validation_examples": len(validation),
            "padding_over_run": {
                "steps": run_steps,
                "before": padding(random_batches(train, mcfg.train.batch_size, seed), run_steps, pad_id,
                                  variant_of),
                "after": padding(LengthGroupedBatches(train, mcfg.train.batch_size, seed), run_steps, pad_id,
                                 variant_of),
                "grouped_option": padding(LengthGroupedBatches(train, mcfg.train.batch_size, seed, GROUPED),
                                          run_steps, pad_id, variant_of),
            },
        }
        before_sampler = random_batches(train, mcfg.train.batch_size, seed)
        default_sampler = LengthGroupedBatches(train, mcfg.train.batch_size, seed)
        entry["default_batches_equal_before"] = all(before_sampler(i) == default_sampler(i) for i in range(run_steps))
        ok &= entry["default_batches_equal_before"]
        times = {setting: [] for setting in STEP_SETTINGS}
        for repeat in range(args.repeats):
            for setting in (list(STEP_SETTINGS) if repeat % 2 == 0 else list(reversed(STEP_SETTINGS))):
                times[setting].append(timed_fine_tune(mcfg, models, train, validation, args.steps, setting))
                log.info("%s %s step time %.4f s", name, setting, times[setting][-1])
        entry["step_time_s"] = {k: [round(t, 5) for t in v] for k, v in times.items()}
        entry["step_time_ratio_grouped_option_over_random"] = ratio(times["grouped_option"], times["random"])

        model, _, _ = build_method_model(mcfg, models)
        model.eval()
        settings = {"before_file_order": (mcfg.train.batch_size, True),
                    "after_sorted": (mcfg.train.batch_size, False),
                    "after_sorted_4x_batch": (4 * mcfg.train.batch_size, False)}
        val_times, val_losses = {k: [] for k in settings}, {}
        for repeat in range(args.repeats):
            for setting, (size, before) in (settings.items() if repeat % 2 == 0 else reversed(settings.items())):
                seconds, loss = timed_validation(model, validation, mcfg.train, size, pad_id, before)
                val_times[setting].append(seconds)
                val_losses[setting] = loss
        spread = max(val_losses.values()) - min(val_losses.values())
        ok &= spread < 1e-4
        entry["validation"] = {
            "seconds": {k: [round(t, 4) for t in v] for k, v in val_times.items()},
            "loss": val_losses, "loss_spread": spread,
            "ratio_after_sorted_over_before": ratio(val_times["after_sorted"], val_times["before_file_order"]),
            "ratio_after_sorted_4x_over_before": ratio(val_times["after_sorted_4x_batch"],
                                                       val_times["before_file_order"]),
        }
        result["methods"][name] = entry
        log.info("%s: padding %.3f (grouped %.3f), grouped/random step time %.3f, validation ratio %.3f", name,
                 entry["padding_over_run"]["before"]["padding_share"],
                 entry["padding_over_run"]["grouped_option"]["padding_share"],
                 entry["step_time_ratio_grouped_option_over_random"],
                 entry["validation"]["ratio_after_sorted_over_before"])

    # LST generation, cached vs uncached, on the test set's inputs (untrained side network).
    mcfg = method_config(cfg, "lst", seed)
    torch.set_num_threads(cfg.evaluate.threads)
    model, tokenizer, _ = build_method_model(mcfg, models)
    model.eval()
    rows = variant_rows(variants, "test", VARIANTS)
    every = max(len(rows) // args.lst_examples, 1)
    inputs = [format_input(r["question"], r["context"]) for r in rows][::every]
    gen_times, texts = {"before_uncached": [], "after_cached": []}, {}
    for repeat in range(args.repeats):
        for setting in (("before_uncached", "after_cached") if repeat % 2 == 0
                        else ("after_cached", "before_uncached")):
            with patched(setting == "before_uncached", type(model), "generate", uncached_lst_generate), \
                    mock.patch.object(generation, "time", CPU_CLOCK):
                run = generate_texts(model, tokenizer, inputs, batch_size=cfg.evaluate.batch_size,
                                     max_input_length=mcfg.train.max_input_length,
                                     max_new_tokens=cfg.evaluate.max_new_tokens, num_beams=1,
                                     device=torch.device("cpu"), desc=setting)
            gen_times[setting].append(run.seconds)
            texts[setting] = run.texts
    same = texts["before_uncached"] == texts["after_cached"]
    ok &= same
    result["lst_generation"] = {
        "examples": len(inputs), "texts_equal": same,
        "generated_words_mean": round(statistics.mean(len(t.split()) for t in texts["after_cached"]), 2),
        "seconds": {k: [round(t, 3) for t in v] for k, v in gen_times.items()},
        "ratio_cached_over_uncached": ratio(gen_times["after_cached"], gen_times["before_uncached"]),
    }
    log.info("lst generation: cached/uncached time ratio %.3f, texts equal %s",
             result["lst_generation"]["ratio_cached_over_uncached"], same)

    result["machine"] = {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                         "platform": platform.platform(), "python": platform.python_version(),
                         "torch": torch.__version__, "threads": torch.get_num_threads()}
    result["note"] = ("Seconds are CPU seconds of the benchmark process (one torch thread); ratios are "
                      "after/before medians over interleaved repeats in one process. The machine's cores "
                      "are shared with other work (load_average_1min), which still moves CPU time a little "
                      "(caches, memory bandwidth).")
    write_json(args.output, result)
    log.info("wrote %s", args.output)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
