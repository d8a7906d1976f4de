"""Examples/s of greedy generation on one CPU thread: one example at a time, batches of 64 in
input order, and batches of 64 sorted longest-first (what the evaluate stage does).

The model is a T5 of the embedded default's shape (params.yaml `pretrain`, random weights: the
weights do not change the cost of a decoding step) with a real sentencepiece vocabulary trained
here on the embedded world's sentences. Inputs are `format_input(question, context)` with
embedded-world questions and one-paragraph contexts of 40-80 tokens. Every setting goes
through `cfqa.evaluation.generation.generate_texts`, the evaluate stage's own loop:
  - `batch_1`:           batch_size=1, no padding at all (the reference texts);
  - `batch_64_unsorted`: one call per consecutive chunk of 64 inputs, so each batch holds the
                         inputs in their given order (the sort inside a chunk changes nothing:
                         a batch is as wide as its longest input);
  - `batch_64_sorted`:   one call over all inputs with batch_size=64.
Random weights rarely emit end-of-sequence, so most examples decode max_new_tokens tokens
(`generated_text_tokens_mean` in the results) and a batch seldom stops early. Greedy decoding
with masked padding must give the same texts in all three settings; a difference is reported
with the decoding step where it starts and the reference's top-2 logit gap there (a gap near
float rounding is a tie, a large one a bug).

    .venv/bin/python benchmarks/generation_batching.py [--examples 256] [--repeats 9]

Writes benchmarks/results/generation_batching.json and exits 1 if the texts differ.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import T5ForConditionalGeneration

from cfqa import config as cfqa_config
from cfqa.io.atomic_io import write_json
from cfqa.evaluation.generation import generate_texts
from cfqa.formats import format_input
from cfqa.io.logs import get_logger, setup_logging
from cfqa.pretraining.model import tiny_t5_config
from cfqa.pretraining.tokenizer import load_t5_tokenizer, train_sentencepiece
from cfqa.world import documents
from cfqa.world.build import options_sentences
from cfqa.world.facts import Fact, load_cities, load_countries, world_facts

RESULTS = Path(__file__).resolve().parent / "results" / "generation_batching.json"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZE = 64
CONTEXT_TOKENS = (40, 80)
MAX_SENTENCE_DRAWS = 200
SETTINGS = ("batch_1", "batch_64_unsorted", "batch_64_sorted")
log = get_logger("benchmarks.generation_batching")


def embedded_world(cfg: cfqa_config.EmbeddedWorldConfig) -> tuple[list[Fact], dict[str, list[str]]]:
    """The world's facts and every sentence it states about each subject (keyed by name)."""
    countries = load_countries()
    cities = load_cities(cfg.min_city_population, cfg.max_cities_per_country, countries)
    sentences = {c.name: options_sentences(documents.country_statements(c)) for c in countries.values()}
    for city in cities:
        sentences[city.name] = options_sentences(documents.city_statements(city, countries[city.country_code]))
    return world_facts(countries, cities), sentences


def build_inputs(facts: list[Fact], sentences: dict[str, list[str]], tokenizer, count: int,
                 seed: int) -> list[str]:
    """Questions about random facts, each with a paragraph that opens on a statement about its
    subject and goes on with other subjects' sentences up to a length drawn from 40-80 tokens."""
    rng = random.Random(seed)
    pool = [s for group in sentences.values() for s in group]
    shortest, longest = CONTEXT_TOKENS
    inputs = []
    for fact in rng.sample(facts, count):
        target = rng.randint(shortest, longest)
        paragraph, size = [rng.choice(sentences[fact.subject])], 0
        for _ in range(MAX_SENTENCE_DRAWS):
            size = len(tokenizer(" ".join(paragraph), add_special_tokens=False).input_ids)
            if size >= target:
                break
            sentence = rng.choice(pool)
            # Whole sentences only; one that would overshoot the longest context is skipped.
            if size + len(tokenizer(sentence, add_special_tokens=False).input_ids) <= longest:
                paragraph.append(sentence)
        if not shortest <= size <= longest:
            raise RuntimeError(f"could not build a context of {shortest}-{longest} tokens for {fact.subject!r}")
        inputs.append(format_input(documents.question(fact.relation, fact.subject, rng), " ".join(paragraph)))
    return inputs


def random_t5(cfg: cfqa_config.PretrainConfig, vocab_size: int) -> T5ForConditionalGeneration:
    """The embedded default's T5 with random weights and an output layer of its own.

    With the output layer tied to the embeddings, a random T5 echoes its start token (<pad>) at
    every step, so every text would be empty and the identity check would compare nothing.
    An untied layer of the same size costs the same per step and gives varied texts.
    """
    config = tiny_t5_config(cfg, vocab_size)
    config.tie_word_embeddings = False
    torch.manual_seed(cfg.seed)
    return T5ForConditionalGeneration(config).eval()


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Pad tokens as a share of all encoder tokens when the batches are padded to their longest."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths) / padded


def run_setting(setting: str, model, tokenizer, inputs: list[str], **generation) -> tuple[list[str], float]:
    if setting == "batch_1":
        result = generate_texts(model, tokenizer, inputs, batch_size=1, desc=setting, **generation)
        return result.texts, result.seconds
    if setting == "batch_64_sorted":
        result = generate_texts(model, tokenizer, inputs, batch_size=BATCH_SIZE, desc=setting, **generation)
        return result.texts, result.seconds
    texts, seconds = [], 0.0
    for start in range(0, len(inputs), BATCH_SIZE):
        result = generate_texts(model, tokenizer, inputs[start:start + BATCH_SIZE], batch_size=BATCH_SIZE,
                                desc=setting, **generation)
        texts += result.texts
        seconds += result.seconds
    return texts, seconds


@torch.no_grad()
def first_divergence(model, tokenizer, text: str, reference: str, other: str, max_input_length: int) -> dict:
    """Where `other` leaves the reference generation, and the reference's top-2 logit gap there.

    Works on the re-tokenized texts (generate_texts returns text only), so the step is close
    to, not always exactly, the decoding step where the two first disagree."""
    ref_ids = tokenizer(reference, add_special_tokens=False).input_ids
    other_ids = tokenizer(other, add_special_tokens=False).input_ids
    step = next((i for i, (a, b) in enumerate(zip(ref_ids, other_ids)) if a != b), min(len(ref_ids), len(other_ids)))
    encoded = tokenizer([text], truncation=True, max_length=max_input_length, return_tensors="pt")
    decoder_input = torch.tensor([[model.config.decoder_start_token_id, *ref_ids[:step]]])
    logits = model(**encoded, decoder_input_ids=decoder_input).logits[0, -1]
    top = torch.topk(logits, 2).values
    return {"step": step, "top2_logit_gap": float(top[0] - top[1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9, help="timed runs of each batched setting (median)")
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    cfg = cfqa_config.load([args.params])
    pcfg, max_input_length = cfg.pretrain, cfg.train.max_input_length
    torch.set_num_threads(1)

    facts, sentences = embedded_world(cfg.data.embedded)
    with tempfile.TemporaryDirectory(prefix="cfqa-generation-bench-") as work:
        corpus = Path(work) / "corpus.txt"
        corpus.write_text("\n".join(s for group in sentences.values() for s in group) + "\n", encoding="utf-8")
        train_sentencepiece(corpus, Path(work) / "tokenizer", pcfg.vocab_size, pcfg.seed)
        tokenizer = load_t5_tokenizer(Path(work) / "tokenizer")
    model = random_t5(pcfg, len(tokenizer))
    inputs = build_inputs(facts, sentences, tokenizer, args.examples, pcfg.seed)
    lengths = [len(ids) for ids in tokenizer(inputs, truncation=True, max_length=max_input_length).input_ids]
    log.info("%d inputs of %d-%d tokens (mean %.1f); model %s parameters, vocabulary %d",
             len(inputs), min(lengths), max(lengths), statistics.mean(lengths),
             f"{sum(p.numel() for p in model.parameters()):,}", len(tokenizer))

    generation = dict(max_input_length=max_input_length, max_new_tokens=cfg.evaluate.max_new_tokens,
                      num_beams=1, device=torch.device("cpu"))
    run_setting("batch_64_sorted", model, tokenizer, inputs[:BATCH_SIZE], **generation)  # warm-up
    texts: dict[str, list[str]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    # Rounds interleave the batched settings, first one then the other leading, so a change in
    # the machine's load hits both alike. One example at a time is long enough to time once.
    for round_ in range(args.repeats):
        batched = SETTINGS[1:] if round_ % 2 == 0 else SETTINGS[:0:-1]
        for name in (SETTINGS[0], *batched) if round_ == 0 else batched:
            texts[name], elapsed = run_setting(name, model, tokenizer, inputs, **generation)
            seconds[name].append(elapsed)
            log.info("round %d %s: %.2f s, %.1f examples/s", round_ + 1, name, elapsed, len(inputs) / elapsed)

    generated_tokens = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts["batch_1"]]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = {"batch_1": [[i] for i in range(len(inputs))],
               "batch_64_unsorted": [list(range(s, min(s + BATCH_SIZE, len(inputs))))
                                     for s in range(0, len(inputs), BATCH_SIZE)],
               "batch_64_sorted": [order[s:s + BATCH_SIZE] for s in range(0, len(order), BATCH_SIZE)]}
    figures = {}
    for name in SETTINGS:
        median = statistics.median(seconds[name])
        figures[name] = {"batch_size": 1 if name == "batch_1" else BATCH_SIZE,
                         "seconds_median": round(median, 3), "seconds_min": round(min(seconds[name]), 3),
                         "seconds_runs": [round(s, 3) for s in seconds[name]],
                         "examples_per_s": round(len(inputs) / median, 2),
                         "ms_per_example": round(1000 * median / len(inputs), 2),
                         "encoder_padding_share": round(padding_share(lengths, batches[name]), 4)}
    for name in SETTINGS:
        figures[name]["speedup_vs_batch_1"] = round(figures[name]["examples_per_s"] / figures["batch_1"]["examples_per_s"], 2)
    # Sorted against unsorted round by round: the two ran back to back, so the load that swings
    # single runs by tens of percent mostly cancels in each round's ratio.
    per_round = [u / s for u, s in zip(seconds["batch_64_unsorted"], seconds["batch_64_sorted"])]
    figures["batch_64_sorted"]["speedup_vs_unsorted"] = {
        "median_of_round_ratios": round(statistics.median(per_round), 3),
        "round_ratios": [round(r, 3) for r in per_round],
        "ratio_of_fastest_runs": round(min(seconds["batch_64_unsorted"]) / min(seconds["batch_64_sorted"]), 3)}

    differences = {}
    for name in SETTINGS[1:]:
        differing = [i for i, (a, b) in enumerate(zip(texts["batch_1"], texts[name])) if a != b]
        differences[name] = {
            "differing_texts": len(differing),
            "first_differences": [{"index": i, **first_divergence(model, tokenizer, inputs[i], texts["batch_1"][i],
                                                                 texts[name][i], max_input_length)}
                                  for i in differing[:5]]}
    identical = all(d["differing_texts"] == 0 for d in differences.values())

    result = {
        "benchmark": "generation_batching",
        "model": {"config": "params.yaml pretrain (random weights, untied output layer)", "d_model": pcfg.d_model,
                  "layers": [pcfg.num_layers, pcfg.num_decoder_layers], "vocab_size": len(tokenizer),
                  "parameters": sum(p.numel() for p in model.parameters())},
        "inputs": {"examples": len(inputs), "context_tokens": list(CONTEXT_TOKENS),
                   "input_tokens": {"min": min(lengths), "mean": round(statistics.mean(lengths), 1),
                                    "max": max(lengths)},
                   "max_input_length": max_input_length, "max_new_tokens": cfg.evaluate.max_new_tokens,
                   "truncated_to_max_input_length": sum(n == max_input_length for n in lengths),
                   # Decoded texts re-tokenized: sentinels and <pad> dropped, so a lower bound.
                   "generated_text_tokens_mean": round(statistics.mean(generated_tokens), 1),
                   "distinct_texts": len(set(texts["batch_1"])),
                   "empty_texts": sum(not t for t in texts["batch_1"]),
                   "example": inputs[0]},
        "threads": torch.get_num_threads(),
        "settings": figures,
        "texts_identical_to_batch_1": identical,
        "differences": differences,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "cpu_count": os.cpu_count(),
                    "load_average_1min": round(os.getloadavg()[0], 2), "platform": platform.platform()},
        "note": "Wall-clock on one thread of a shared machine (see load_average_1min); the settings are "
                "timed in interleaved rounds, so their ratios hold better than the absolute figures. "
                "Batched settings: median of the rounds; batch_1: one run. speedup_vs_unsorted holds for "
                "this input mix only: a 40-80 token context plus the question often reaches "
                "max_input_length, so even unsorted batches pad little (encoder_padding_share).",
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.results, result)
    log.info("examples/s: %s; texts identical: %s; wrote %s",
             {n: f["examples_per_s"] for n, f in figures.items()}, identical, args.results)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
