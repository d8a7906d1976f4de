"""A rehearsal of the t5-large profile (workflow/profiles/disentqa-t5-large) before a GPU is
booked: every method built at the profile's model geometry with random weights, trained a few
steps on real-shaped batches at the profile's batch and lengths, and the whole profile's cost
projected from it.

Per method it writes: the padded share of batch positions under random batches (before) and
under the profile's `train.batching` (after); FLOPs per optimizer step (counted exactly by
torch's FlopCounterMode on the meta device at the full geometry, over the profile's real batch
widths); examples/s and tokens/s; the step's memory; MFU against the device's bf16 peak (GPU);
validation and tokenization cost as a share of the run; and a projected wall time and GPU-hours
for the whole profile (every seed, tune's search, validation; not generation).

    nice -n 10 .venv/bin/python benchmarks/real_profile_rehearsal.py            # CPU: a few minutes
    .venv/bin/python benchmarks/real_profile_rehearsal.py --device cuda          # the full geometry on a GPU

On CPU the models have the profile's widths with 1 and 2 layers (encoder and decoder each),
timed in fp32 on `--cpu-rows` rows per micro-batch, and time and memory are extrapolated per
layer (T5's layers are identical) to 24 layers and per row to the profile's 16; the GPU
projection then divides the FLOPs by the bf16 peak at an assumed MFU (`--assumed-mfu`). With
`--device cuda` every layer is built, each method trains `--steps` optimizer steps at the
profile's batch (bf16 autocast, Adafactor), and step time, peak memory
(`torch.cuda.max_memory_allocated`) and MFU are measured.

Real-shaped batches: token lengths of NQ-like rows in the training mixture's proportions.
By default from the length model below, built from published descriptions of NQ (see
LENGTH_MODEL; not measured here: no NQ on this machine); `--lengths-from PREPARED.jsonl` reads
them from a real prepared NQ split instead (the `prepare` stage's rows), tokenized with
`--tokenizer`. Writes benchmarks/results/real_profile_rehearsal[_cuda].json.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cfqa.io.atomic_io import read_jsonl, write_json
from cfqa.config import PROJECT_ROOT, Config, load
from cfqa.formats import VARIANTS
from cfqa.io.logs import get_logger, setup_logging
from cfqa.model.measure import training_step_memory
from cfqa.methods.registry import get_method
from cfqa.training.batches import fixed_sample, length_order, sequential_batches, training_batches
from cfqa.training.lr_search import SearchPlan, rung_steps
from cfqa.training.optimization import make_optimizer

log = get_logger("benchmarks.real_profile_rehearsal")
PROFILE = PROJECT_ROOT / "workflow" / "profiles" / "disentqa-t5-large" / "params.yaml"
RESULTS = Path(__file__).resolve().parent / "results"

# Dense bf16 peak FLOP/s by device name (vendor datasheets, without sparsity).
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.5,
                    "H100 NVL": 835.5, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0}

# DisentQA's split sizes (Neeman et al. 2023): questions with a short and a long answer in NQ
# train, split 80/20, and those whose answer is a typed entity (which get counterfactuals).
DISENTQA_ROWS = {"train": {"questions": 85_540, "counterfactual_questions": 30_653},
                 "validation": {"questions": 21_386, "counterfactual_questions": 7_698}}

# Token lengths of NQ-like rows (T5's 32k sentencepiece vocabulary). Assumed from published
# descriptions, not measured: NQ questions are real search queries, mostly 8-10 words
# (Kwiatkowski et al. 2019); a long answer is "typically a paragraph" of a Wikipedia page,
# some are tables or lists; short answers are a few words (entities, dates). English text
# takes ~1.3 sentencepiece tokens per word. Replace with --lengths-from on real data.
LENGTH_MODEL = {
    "question_words": (9.0, 2.0),                  # normal: mean, sd (at least 4 words)
    "paragraph_share": 0.8,
    "paragraph_words": (90.0, 0.6),                # log-normal: median, sigma
    "table_or_list_words": (250.0, 0.9),
    "answer_words": (2.3, 0.6),                    # log-normal: median, sigma (at least 1 word)
    "tokens_per_word": 1.3,
    "input_template_tokens": 5,                    # "question: ...?\ncontext: ..."
    "target_marker_tokens": 6,                     # "contextual: ...\nparametric: ..." and eos
    "unanswerable_tokens": 4,
}


# ---------------------------------------------------------------------------- geometry

def t5_large_config(lm_adapted: bool, layers: int):
    """The hub configs' shapes: t5-large, and google/t5-large-lm-adapt (T5 v1.1: gated GELU,
    d_ff 2816, untied output head), with `layers` encoder and decoder layers."""
    from transformers import T5Config

    shared = dict(vocab_size=32128, d_model=1024, d_kv=64, num_layers=layers, num_decoder_layers=layers, num_heads=16,
                  relative_attention_num_buckets=32, dropout_rate=0.1, pad_token_id=0, eos_token_id=1,
                  decoder_start_token_id=0)
    if lm_adapted:
        return T5Config(d_ff=2816, feed_forward_proj="gated-gelu", tie_word_embeddings=False, **shared)
    return T5Config(d_ff=4096, feed_forward_proj="relu", tie_word_embeddings=True, **shared)


def build(cfg: Config, method: str, layers: int, device: str):
    from transformers import T5ForConditionalGeneration

    mcfg = cfg.method(method, 0)
    torch.manual_seed(0)
    with torch.device(device):
        base = T5ForConditionalGeneration(t5_large_config(mcfg.backbone == "lm_adapted", layers))
        model = get_method(mcfg.method).build(base, mcfg.options)
    return model.to(device), mcfg


# ---------------------------------------------------------------------------- real-shaped rows

def mixture_counts(cfg: Config, split: str) -> dict[str, int]:
    rows = DISENTQA_ROWS[split]
    per_question = cfg.counterfactuals.train_counterfactuals_per_question if split == "train" else 1
    counts = {"factual": rows["questions"], "counterfactual": rows["counterfactual_questions"] * per_question,
              "empty": rows["questions"], "random": rows["questions"]}
    return {variant: counts[variant] for variant in cfg.train.mixture}


def modelled_lengths(counts: dict[str, int], rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Untruncated (input, target) token lengths per variant, from LENGTH_MODEL."""
    m = LENGTH_MODEL
    lengths = {}
    for variant, n in counts.items():
        question = np.maximum(rng.normal(*m["question_words"], n), 4)
        table = rng.random(n) > m["paragraph_share"]
        context = np.where(table, rng.lognormal(np.log(m["table_or_list_words"][0]), m["table_or_list_words"][1], n),
                           rng.lognormal(np.log(m["paragraph_words"][0]), m["paragraph_words"][1], n))
        if variant == "empty":
            context = np.zeros(n)
        inputs = m["input_template_tokens"] + m["tokens_per_word"] * (question + context)
        answers = [np.maximum(rng.lognormal(np.log(m["answer_words"][0]), m["answer_words"][1], n), 1)
                   * m["tokens_per_word"] for _ in range(2)]
        contextual = np.full(n, m["unanswerable_tokens"]) if variant in ("empty", "random") else answers[0]
        targets = m["target_marker_tokens"] + contextual + answers[1]
        lengths[variant] = (np.rint(inputs).astype(int), np.rint(targets).astype(int))
    return lengths


def measured_lengths(path: Path, tokenizer_dir: Path, counts: dict[str, int], rng: np.random.Generator):
    """Lengths from a prepared NQ split (rows of `cfqa prepare`), tokenized; variants as the
    counterfactuals stage makes them (empty: no context; random: another row's context)."""
    from transformers import AutoTokenizer

    from cfqa.formats import UNANSWERABLE, format_input, format_target

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = list(read_jsonl(path))
    lengths = {}
    for variant, n in counts.items():
        chosen = [rows[i] for i in rng.integers(0, len(rows), n)]
        contexts = {"empty": ["" for _ in chosen],
                    "random": [rows[i]["context"] for i in rng.integers(0, len(rows), n)]}.get(
                        variant, [r["context"] for r in chosen])
        answers = [UNANSWERABLE if variant in ("empty", "random") else r["answer"] for r in chosen]
        inputs = tokenizer([format_input(r["question"], c) for r, c in zip(chosen, contexts)]).input_ids
        targets = tokenizer([format_target(a, r["answer"], "disentangled") for a, r in zip(answers, chosen)]).input_ids
        lengths[variant] = (np.array([len(i) for i in inputs]), np.array([len(t) for t in targets]))
    return lengths


def as_examples(lengths: dict, max_input: int, max_target: int) -> tuple[list, list[int]]:
    """Examples that are only lengths (what batching and padding depend on), truncated as jobs truncate."""
    examples, strata = [], []
    for variant, (inputs, targets) in lengths.items():
        for source, target in zip(np.minimum(inputs, max_input), np.minimum(targets, max_target)):
            examples.append((range(int(source)), range(int(target))))
            strata.append(VARIANTS.index(variant))
    return examples, strata


def widths(batch) -> tuple[int, int, int, int]:
    """(rows, input width, target width, real tokens) of a padded seq2seq batch."""
    inputs = [len(s) for s, _ in batch]
    targets = [len(t) for _, t in batch]
    return len(batch), max(inputs), max(targets), sum(inputs) + sum(targets)


def padding_share(batches) -> float:
    real = positions = 0
    for batch in batches:
        rows, w_in, w_out, tokens = widths(batch)
        real, positions = real + tokens, positions + rows * (w_in + w_out)
    return 1 - real / positions


# ---------------------------------------------------------------------------- FLOPs

DESIGN = [(32, 8), (128, 16), (256, 32), (512, 64), (512, 8), (64, 64)]


def features(w_in: float, w_out: float) -> np.ndarray:
    """A seq2seq step's FLOPs per row are a quadratic in the two widths (linear layers are
    linear in each, self-attention quadratic, cross-attention their product)."""
    return np.array([1.0, w_in, w_out, w_in * w_in, w_out * w_out, w_in * w_out])


def flops_models(cfg: Config, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of FLOPs per row at the profile's depth, of a training step (forward and
    backward) and of a forward pass alone: counted on the meta device (no compute) at 1 and 2
    layers over DESIGN's widths, fitted exactly, extrapolated per layer."""
    try:
        return _flops_models(cfg, method, "meta")
    except RuntimeError as error:      # a method that reads a tensor's value on the host
        if "meta" not in str(error):
            raise
        log.info("%s reads tensor values on the host (%s): FLOPs counted on the CPU instead", method, error)
        return _flops_models(cfg, method, "cpu")


def _flops_models(cfg: Config, method: str, device: str) -> tuple[np.ndarray, np.ndarray]:
    from torch.utils.flop_counter import FlopCounterMode

    fits = {}
    for layers in (1, 2):
        model, _ = build(cfg, method, layers, device)
        model.train()
        rows, forward, backward = [], [], []
        for w_in, w_out in DESIGN:
            # No attention mask: transformers checks `mask.all()` on the host, which a meta
            # tensor cannot answer; the FLOPs do not depend on it.
            batch = {"input_ids": torch.zeros((1, w_in), dtype=torch.long, device=device),
                     "labels": torch.zeros((1, w_out), dtype=torch.long, device=device)}
            forward_counter, backward_counter = FlopCounterMode(display=False), FlopCounterMode(display=False)
            with forward_counter:
                loss = model(**batch).loss
            with backward_counter:
                loss.backward()
            rows.append(features(w_in, w_out))
            forward.append(forward_counter.get_total_flops())
            backward.append(backward_counter.get_total_flops())
        solve = lambda values: np.linalg.lstsq(np.array(rows), np.array(values, dtype=float), rcond=None)[0]
        fits[layers] = (solve(np.add(forward, backward)), solve(forward))
    depth = t5_large_config(False, 24).num_layers
    return tuple(fits[1][i] + (depth - 1) * (fits[2][i] - fits[1][i]) for i in (0, 1))


def batch_flops(coefficients: np.ndarray, batch) -> float:
    rows, w_in, w_out, _ = widths(batch)
    return rows * float(features(w_in, w_out) @ coefficients)


# ---------------------------------------------------------------------------- time and memory

def real_batch(rows: int, w_in: int, w_out: int, device: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(2, 32000, (rows, w_in), generator=generator).to(device),
            "attention_mask": torch.ones((rows, w_in), dtype=torch.long).to(device),
            "labels": torch.randint(2, 32000, (rows, w_out), generator=generator).to(device)}


def cpu_step(cfg: Config, method: str, layers: int, rows: int, w_in: int, w_out: int) -> dict:
    """One timed fp32 training step (after one untimed) on the CPU, and its memory by part."""
    model, mcfg = build(cfg, method, layers, "cpu")
    optimizer = make_optimizer(model.parameters(), mcfg.train.optimizer, mcfg.train.lr, mcfg.train.weight_decay)
    batch = real_batch(rows, w_in, w_out, "cpu")
    training_step_memory(model, batch, optimizer)                    # warm-up: allocations, optimizer state
    started = time.process_time()
    memory = training_step_memory(model, batch, optimizer)
    return {"seconds": time.process_time() - started, "memory": memory}


def extrapolate(one: float, two: float, depth: int) -> float:
    return one + (depth - 1) * (two - one)


def cuda_steps(cfg: Config, method: str, sampler, steps: int, coefficients: np.ndarray, accumulation: int) -> dict:
    """`steps` optimizer steps at the full geometry with bf16 autocast on the GPU."""
    model, mcfg = build(cfg, method, t5_large_config(False, 24).num_layers, "cuda")
    if mcfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = make_optimizer(model.parameters(), mcfg.train.optimizer, mcfg.train.lr, mcfg.train.weight_decay)
    index, flops, tokens, seconds = 0, 0.0, 0, 0.0
    torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 1):                                    # step 0 warms up
        torch.cuda.synchronize()
        started = time.perf_counter()
        step_flops = step_tokens = 0
        for _ in range(accumulation):
            batch = sampler(index)
            index += 1
            rows, w_in, w_out, real = widths(batch)
            inputs = real_batch(rows, w_in, w_out, "cuda")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(**inputs).loss / accumulation
            loss.backward()
            step_flops += batch_flops(coefficients, batch)
            step_tokens += real
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], mcfg.train.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step:
            seconds += time.perf_counter() - started
            flops += step_flops
            tokens += step_tokens
    return {"step_time_s": seconds / steps, "flops_per_s": flops / seconds, "tokens_per_s": tokens / seconds,
            "peak_memory_bytes": torch.cuda.max_memory_allocated()}


# ---------------------------------------------------------------------------- tokenization

def tokenization_seconds_per_row(lengths: dict, rng: np.random.Generator, sample: int = 2000) -> float:
    """CPU seconds per row for the pipeline's tokenizer class (transformers' T5Tokenizer over a
    unigram sentencepiece model, trained here on random words: throughput depends on the
    text's length, not on its content) to tokenize NQ-length inputs."""
    import io
    import tempfile

    import sentencepiece as spm

    from cfqa.pretraining.tokenizer import SPIECE, load_t5_tokenizer

    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(5000)]
    corpus = [" ".join(rng.choice(words, 40)) for _ in range(4000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=4000,
                                   hard_vocab_limit=False, model_type="unigram", minloglevel=2, num_threads=1)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / SPIECE).write_bytes(model.getvalue())
        tokenizer = load_t5_tokenizer(Path(folder))
    inputs = np.concatenate([lengths[v][0] for v in lengths])
    texts = [" ".join(rng.choice(words, max(int(n / LENGTH_MODEL["tokens_per_word"]), 1)))
             for n in rng.choice(inputs, sample)]
    started = time.process_time()
    tokenizer(texts)
    return (time.process_time() - started) / sample


# ---------------------------------------------------------------------------- the profile

def device_peak(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def rehearse(args) -> dict:
    cfg = load([PROJECT_ROOT / "params.yaml", args.profile])
    rng = np.random.default_rng(0)
    tcfg = cfg.train
    counts = {split: mixture_counts(cfg, split) for split in ("train", "validation")}
    lengths = {split: (measured_lengths(args.lengths_from, args.tokenizer, counts[split], rng) if args.lengths_from
                       else modelled_lengths(counts[split], rng)) for split in counts}
    train, strata = as_examples(lengths["train"], tcfg.max_input_length, tcfg.max_target_length)
    validation, _ = as_examples(lengths["validation"], tcfg.max_input_length, tcfg.max_target_length)
    micro_steps = tcfg.max_steps * tcfg.grad_accum_steps
    samplers = {name: training_batches(train, tcfg.batch_size, 0, name, tcfg.group_batches, strata)
                for name in ("random", "length", "stratified")}
    epoch = {name: [sampler(i) for i in range(min(micro_steps, sampler.per_epoch))] for name, sampler in samplers.items()}
    padding = {name: round(100 * padding_share(batches), 1) for name, batches in epoch.items()}
    sample = fixed_sample(validation, tcfg.validation_examples, tcfg.validation_seed)
    evaluations = math.ceil(tcfg.max_steps / tcfg.eval_every)
    tokenize_row_s = tokenization_seconds_per_row(lengths["train"], rng)
    on_cuda = args.device == "cuda"
    gpu_name = torch.cuda.get_device_name() if on_cuda else None
    peak = device_peak(gpu_name or args.projection_device, args.peak_tflops)

    chosen = tcfg.batching
    result = {
        "profile": str(args.profile.relative_to(PROJECT_ROOT)), "device": args.device, "gpu": gpu_name,
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2)},
        "lengths": "measured from " + str(args.lengths_from) if args.lengths_from else {"assumed": LENGTH_MODEL},
        "rows": counts, "batching": chosen, "group_batches": tcfg.group_batches,
        "padding_share_pct": padding,
        "validation": {"examples_per_evaluation": len(sample), "whole_set": len(validation),
                       "evaluations": evaluations},
        "projection": {"device": gpu_name or args.projection_device, "bf16_peak_tflops": peak and peak / 1e12,
                       "mfu": None if on_cuda else args.assumed_mfu,
                       "covers": "train (every seed, max_steps), validation, tune's search; not generation"},
        "methods": {},
    }
    if not on_cuda:
        rows = args.cpu_rows
        mean_in = int(np.mean([widths(b)[1] for b in epoch[chosen]]))
        mean_out = int(np.mean([widths(b)[2] for b in epoch[chosen]]))
        result["cpu_rehearsal"] = {"layers": [1, 2], "rows": rows, "input_width": mean_in, "target_width": mean_out,
                                   "precision": "fp32 (bf16 autocast is slower than fp32 on CPUs)"}
    methods = args.methods or list(cfg.methods)
    if not on_cuda and "full" in cfg.methods and methods[0] != "full":
        methods = ["full", *[m for m in methods if m != "full"]]      # the efficiency reference first
    reference: dict = {}
    for method in methods:
        mcfg = cfg.method(method, 0)
        log.info("%s: FLOPs at the full geometry (meta device)", method)
        train_coefficients, forward_coefficients = flops_models(cfg, method)
        accumulation = mcfg.train.grad_accum_steps
        step_flops = {name: accumulation * float(np.mean([batch_flops(train_coefficients, b) for b in batches]))
                      for name, batches in epoch.items()}
        step_tokens = accumulation * float(np.mean([widths(b)[3] for b in epoch[chosen]]))
        validation_flops = sum(batch_flops(forward_coefficients, b)
                               for b in sequential_batches([sample[i] for i in length_order(sample)], tcfg.batch_size))
        whole_flops = sum(batch_flops(forward_coefficients, b)
                          for b in sequential_batches([validation[i] for i in length_order(validation)],
                                                      tcfg.batch_size))
        entry: dict = {
            "trainable_backbone": mcfg.backbone,
            "flops_per_step": {name: f"{value:.4g}" for name, value in step_flops.items()},
            "tokens_per_step": round(step_tokens),
            "examples_per_step": tcfg.batch_size * accumulation,
        }
        if on_cuda:
            measured = cuda_steps(cfg, method, samplers[chosen], args.steps, train_coefficients, accumulation)
            step_time = measured["step_time_s"]
            entry.update(step_time_s=round(step_time, 3), tokens_per_s=round(measured["tokens_per_s"]),
                         examples_per_s=round(tcfg.batch_size * accumulation / step_time, 2),
                         peak_memory_gib=round(measured["peak_memory_bytes"] / 2**30, 2),
                         mfu_pct=round(100 * measured["flops_per_s"] / peak, 1) if peak else None)
            achieved = measured["flops_per_s"]
        else:
            steps = {layers: cpu_step(cfg, method, layers, rows, mean_in, mean_out) for layers in (1, 2)}
            depth = t5_large_config(False, 24).num_layers
            cpu_micro = extrapolate(steps[1]["seconds"], steps[2]["seconds"], depth) * tcfg.batch_size / rows
            mem = {part: extrapolate(getattr(steps[1]["memory"], part), getattr(steps[2]["memory"], part), depth)
                   for part in ("parameter_bytes", "gradient_bytes", "optimizer_state_bytes", "activation_bytes")}
            mem["activation_bytes"] *= tcfg.batch_size / rows
            micro_flops = batch_flops(train_coefficients, [(range(mean_in), range(mean_out))] * tcfg.batch_size)
            cpu_flops_per_s = micro_flops / cpu_micro
            # A method of many small operations (LST's side network, adapters) reaches less of
            # a device's peak than full fine-tuning's large matrix products: its assumed MFU is
            # scaled by its FLOP rate on this CPU relative to full fine-tuning's.
            reference.setdefault("cpu_flops_per_s", cpu_flops_per_s)
            efficiency = min(cpu_flops_per_s / reference["cpu_flops_per_s"], 1.0)
            achieved = args.assumed_mfu * efficiency * peak if peak else None
            step_time = step_flops[chosen] / achieved if achieved else None
            entry.update(
                cpu_gflops_per_s=round(cpu_flops_per_s / 1e9, 1),
                projected_mfu_pct=round(100 * args.assumed_mfu * efficiency, 1),
                cpu_tokens_per_s=round(step_tokens / (step_flops[chosen] / cpu_flops_per_s), 1),
                step_memory_gib={k.removesuffix("_bytes"): round(v / 2**30, 2) for k, v in mem.items()},
                step_memory_sum_gib=round(sum(mem.values()) / 2**30, 2),
                projected_step_time_s=round(step_time, 3) if step_time else None,
                projected_tokens_per_s=round(step_tokens / step_time) if step_time else None,
                projected_examples_per_s=round(tcfg.batch_size * accumulation / step_time, 2) if step_time else None)
        if step_time:
            validation_s = (evaluations * validation_flops + whole_flops) / achieved
            train_s = mcfg.train.max_steps * step_time
            per_validation_example = whole_flops / len(validation) / achieved
            # tune: the search's planned steps (successive halving on the real schedule), each
            # trial's loss on the fixed sample at every rung it reaches (at most all of them).
            plan = SearchPlan(factors=tuple(cfg.tune.lr_factors), trials=cfg.tune.trials,
                              rung_steps=rung_steps(cfg.tune.rungs, mcfg.train.max_steps),
                              keep_fraction=cfg.tune.keep_fraction)
            tune_s = (plan.planned_steps * step_time
                      + plan.trials * len(plan.rung_steps) * cfg.tune.validation_examples * per_validation_example)
            run_s = train_s + validation_s
            # Before the tokenize stage every train job tokenized the training and validation
            # mixtures while holding its GPU; now the CPU stage does it once for every job.
            tokenize_s = (len(train) + len(validation)) * tokenize_row_s
            entry.update(
                validation_share_pct={"periodic_sample": round(100 * evaluations * validation_flops / achieved / train_s, 2),
                                      "whole_set_at_end": round(100 * whole_flops / achieved / train_s, 2),
                                      "total": round(100 * validation_s / train_s, 2)},
                tokenization_share_pct={"before": round(100 * tokenize_s / (run_s + tokenize_s), 2), "after": 0.0},
                padding_share_pct={"before": padding["random"], "after": padding[chosen]},
                projected_hours_per_seed=round(run_s / 3600, 2),
                projected_gpu_hours=round((len(cfg.seeds) * run_s + tune_s) / 3600, 1))
        result["methods"][method] = entry
        log.info("%s: %s", method, entry)
    total = [e.get("projected_gpu_hours") for e in result["methods"].values()]
    if all(total):
        result["projection"]["gpu_hours_all_methods"] = round(sum(total), 1)
    result["tokenize_stage_cpu_minutes"] = round((len(train) + len(validation)) * tokenize_row_s / 60, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path, default=PROFILE)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", nargs="*", help="default: every method of the profile")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per method on a GPU (after a warm-up)")
    parser.add_argument("--cpu-rows", type=int, default=2, help="rows per micro-batch timed on CPU (scaled to the profile's)")
    parser.add_argument("--projection-device", default="H100 SXM", help="the GPU a CPU rehearsal projects onto")
    parser.add_argument("--assumed-mfu", type=float, default=0.35, help="model FLOPs utilization a CPU rehearsal assumes")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak of the device, if not in the table")
    parser.add_argument("--lengths-from", type=Path, default=None, help="a prepared NQ split (JSONL) to take lengths from")
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory for --lengths-from")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.lengths_from and not args.tokenizer:
        parser.error("--lengths-from needs --tokenizer")
    setup_logging()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    started = time.perf_counter()
    result = rehearse(args)
    result["wall_time_s"] = round(time.perf_counter() - started, 1)
    out = args.out or RESULTS / f"real_profile_rehearsal{'_cuda' if args.device == 'cuda' else ''}.json"
    write_json(out, result)
    log.info("wrote %s in %.0f s", out, result["wall_time_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
