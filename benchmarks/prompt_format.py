"""Why prompt tuning does not learn the output format on the embedded world, measured.

Every target starts with the format marker `▁contextual:`, one token of the tokenizer that the
pretraining corpus never contains (the markers are added to the vocabulary for fine-tuning).
Prompt tuning trains only the prompt's input embeddings: the frozen decoder and its LM head (tied
to the input embeddings) must put that token first. This measures, on the validation factual
inputs:

  - static, for each backbone (span-corruption `base`, LM-adapted `base_lm`, and `base_lm`
    adapted for longer): the rank of `▁contextual:` among the first decoder step's logits
    (0 = the top token), its probability, and its output-embedding norm against the other rows;
  - prompt tuning runs of --steps steps (real loop and data, one seed, one thread), one change
    at a time against today's setting (LM-adapted backbone, 20 virtual tokens initialised from
    sampled vocabulary rows, AdamW at the configured rate): the label words as initialisation
    (the prompt starts as the embeddings of "contextual: parametric: unanswerable"), Adafactor,
    100 virtual tokens, a higher rate, the span-corruption backbone, the longer-adapted
    backbone; every --every steps the marker's median rank and mean probability at the first
    step, the share of well-formed generations and the validation counterfactual contextual EM;
  - the same measures for full fine-tuning and LoRA over the same steps, as references that can
    move the LM head (full) or the decoder's own layers (LoRA).

Uses a finished run's data and backbones (--workdir: data/variants, models/base, models/base_lm);
the longer LM adaptation is made here from models/base with the pretraining code and cached in
--workdir/models/base_lm_long. One process, torch on one thread:

    nice -n 10 .venv/bin/python benchmarks/prompt_format.py --workdir /tmp/cfqa-run [--steps 600]

Writes benchmarks/results/prompt_format.json (or --out).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cfqa.scoring.answer_metrics import exact_match
from cfqa.io.atomic_io import write_json
from cfqa.training.backbone import load_backbone
from cfqa.config import BACKBONE_DIRS, PROJECT_ROOT, load
from cfqa.methods.registry import get_method
from cfqa.training.optimization import seed_everything
from cfqa.evaluation.generation import generate_texts
from cfqa.evaluation.scoring import gold_contextual
from cfqa.formats import format_input, is_well_formed, parse_generation
from cfqa.pretraining import loop as pretraining
from cfqa.training.batches import text_pairs, tokenize_pairs, variant_rows
from cfqa.training.loop import fine_tune, make_accelerator

MARKER = "▁contextual:"
LABEL_WORDS = "contextual: parametric: unanswerable"
LONG_ADAPT_DIR = "base_lm_long"


@dataclasses.dataclass(frozen=True)
class Variant:
    description: str
    method: str = "prompt"
    backbone: str = "lm_adapted"
    train: dict = dataclasses.field(default_factory=dict)
    lr_factor: float = 1.0
    options: dict = dataclasses.field(default_factory=dict)
    label_word_init: bool = False


VARIANTS = {
    "today": Variant("LM-adapted backbone, 20 tokens from sampled vocabulary rows, AdamW, configured lr"),
    "label_words": Variant("initialised from the label words' embeddings", label_word_init=True),
    "adafactor": Variant("Adafactor (Lester et al.'s optimizer) at the same rate", train={"optimizer": "adafactor"}),
    "tokens100": Variant("100 virtual tokens", options={"num_virtual_tokens": 100}),
    "lr_x10": Variant("ten times the rate", lr_factor=10.0),
    "span_backbone": Variant("span-corruption backbone (no LM adaptation)", backbone="base"),
    "long_adapt": Variant("backbone LM-adapted 4x longer", backbone=LONG_ADAPT_DIR),
    "full": Variant("reference: full fine-tuning", method="full", backbone="base"),
    "lora": Variant("reference: LoRA", method="lora", backbone="base"),
}


@torch.no_grad()
def marker_first_step(model, tokenizer, rows: list[dict], max_input_length: int) -> dict:
    """Rank (0 = top) and probability of the marker at the first decoder step, over `rows`."""
    marker = tokenizer.convert_tokens_to_ids(MARKER)
    model.eval()
    encoded = tokenizer([format_input(r["question"], r["context"]) for r in rows], truncation=True,
                        max_length=max_input_length, padding=True, return_tensors="pt")
    start = torch.full((len(rows), 1), model.config.decoder_start_token_id, dtype=torch.long)
    logits = model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask, decoder_input_ids=start).logits[:, 0]
    ranks = (logits > logits[:, marker:marker + 1]).sum(-1).float()
    probability = torch.softmax(logits, -1)[:, marker]
    top = tokenizer.convert_ids_to_tokens([int(i) for i in torch.mode(logits.argmax(-1)).values.reshape(1)])[0]
    return {"marker_rank_median": float(ranks.median()), "marker_top1_pct": 100 * float((ranks == 0).float().mean()),
            "marker_probability_mean": float(probability.mean()), "most_common_first_token": top}


def embedding_norms(model, tokenizer) -> dict:
    weights = model.get_output_embeddings().weight.detach()
    norms = weights.norm(dim=-1)
    marker = tokenizer.convert_tokens_to_ids(MARKER)
    return {"marker_output_row_norm": float(norms[marker]), "median_output_row_norm": float(norms.median()),
            "marker_row_norm_percentile": 100 * float((norms < norms[marker]).float().mean())}


def generation_scores(model, tokenizer, rows: dict[str, list[dict]], tcfg, ecfg) -> dict:
    scores = {}
    for name, chosen in rows.items():
        texts = generate_texts(model, tokenizer, [format_input(r["question"], r["context"]) for r in chosen],
                               batch_size=ecfg.batch_size, max_input_length=tcfg.max_input_length,
                               max_new_tokens=ecfg.max_new_tokens, num_beams=1, device=torch.device("cpu"),
                               desc=name).texts
        scores[f"{name}_well_formed_pct"] = 100 * float(np.mean([is_well_formed(t, tcfg.target_format) for t in texts]))
        scores[f"{name}_contextual_em_pct"] = 100 * float(np.mean(
            [exact_match(parse_generation(t).contextual, gold_contextual(r)) for r, t in zip(chosen, texts)]))
        scores[f"{name}_example"] = texts[0]
    return scores


def long_adapted_backbone(workdir: Path, cfg) -> Path:
    """models/base LM-adapted for 4x pretrain.lm_adapt_steps (cached)."""
    target = workdir / "models" / LONG_ADAPT_DIR
    if (target / "config.json").is_file():
        return target
    model, tokenizer = load_backbone(workdir / "models" / "base")
    corpus = (workdir / "data" / "raw" / "corpus.txt").read_text(encoding="utf-8").splitlines()
    sequences = pretraining.pack(tokenizer(corpus, add_special_tokens=False).input_ids, cfg.pretrain.max_length)
    pretraining.pretrain(model, sequences, lambda seq, rng: pretraining.prefix_lm_example(seq, tokenizer.eos_token_id, rng),
                         steps=4 * cfg.pretrain.lm_adapt_steps, cfg=cfg.pretrain, pad_id=tokenizer.pad_token_id,
                         desc="long LM adaptation")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / "spiece.model").write_bytes((workdir / "models" / "base" / "spiece.model").read_bytes())
        os.replace(tmp, target)
    return target


def build(cfg, workdir: Path, variant: Variant, seed: int):
    mcfg = cfg.method(variant.method, seed)
    options = dataclasses.replace(mcfg.options, **variant.options) if variant.options else mcfg.options
    train = dataclasses.replace(mcfg.train, **variant.train, lr=mcfg.train.lr * variant.lr_factor)
    mcfg = dataclasses.replace(mcfg, options=options, train=train, backbone=variant.backbone)
    # as cfqa.training.backbone.build_method_model, with this benchmark's own backbone folder allowed
    base, tokenizer = load_backbone(workdir / "models" / BACKBONE_DIRS.get(variant.backbone, variant.backbone))
    seed_everything(seed)
    model = get_method(variant.method).build(base, options)
    if variant.label_word_init:
        ids = tokenizer(LABEL_WORDS, add_special_tokens=False).input_ids
        count = options.num_virtual_tokens
        ids = (ids * (count // len(ids) + 1))[:count]
        with torch.no_grad():
            table = model.prompt_encoder["default"].embedding.weight
            table.copy_(model.word_embeddings.weight[torch.tensor(ids)])
    return mcfg, model, tokenizer


def run_variant(cfg, workdir: Path, name: str, variant: Variant, steps: int, every: int, seed: int) -> dict:
    mcfg, model, tokenizer = build(cfg, workdir, variant, seed)
    tcfg = dataclasses.replace(mcfg.train, max_steps=steps, eval_every=every, early_stopping_patience=0)
    variants = workdir / "data" / "variants"
    train = tokenize_pairs(tokenizer, text_pairs(variant_rows(variants, "train", tcfg.mixture), tcfg.target_format),
                           tcfg.max_input_length, tcfg.max_target_length)
    validation = tokenize_pairs(tokenizer, text_pairs(variant_rows(variants, "validation", tcfg.mixture),
                                                      tcfg.target_format), tcfg.max_input_length, tcfg.max_target_length)
    validation = validation[::4]                     # a quarter of each variant: the loss only
    rows = {"val_factual": variant_rows(variants, "validation", ("factual",)),
            "val_counterfactual": variant_rows(variants, "validation", ("counterfactual",))}
    trajectory = [{"step": 0, **marker_first_step(model, tokenizer, rows["val_factual"], tcfg.max_input_length)}]

    def measure(point: dict) -> None:
        trajectory.append({"step": point["step"], "val_loss": point["val_loss"],
                           **marker_first_step(model, tokenizer, rows["val_factual"], tcfg.max_input_length),
                           **generation_scores(model, tokenizer, rows, tcfg, cfg.evaluate)})
        model.train()

    started = time.process_time()
    with tempfile.TemporaryDirectory() as scratch:
        fine_tune(model, train, validation, tcfg, pad_id=tokenizer.pad_token_id, checkpoint_dir=Path(scratch) / "c",
                  fingerprint=name, accelerator=make_accelerator(tcfg), on_validation=measure)
    return {"description": variant.description, "method": variant.method, "backbone": mcfg.backbone,
            "lr": tcfg.lr, "optimizer": tcfg.optimizer, "options": mcfg.options_record(),
            "cpu_s": round(time.process_time() - started, 1), "trajectory": trajectory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "prompt_format.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load([args.params])
    cache = args.workdir / "prompt_format"
    static = {}
    long_dir = long_adapted_backbone(args.workdir, cfg)
    rows = variant_rows(args.workdir / "data" / "variants", "validation", ("factual",))
    for name, directory in (("base", "base"), ("lm_adapted", "base_lm"), (LONG_ADAPT_DIR, long_dir.name)):
        model, tokenizer = load_backbone(args.workdir / "models" / directory)
        static[name] = {**marker_first_step(model, tokenizer, rows, cfg.train.max_input_length),
                        **embedding_norms(model, tokenizer),
                        "marker_in_corpus": MARKER.lstrip("▁") in (args.workdir / "data/raw/corpus.txt").read_text()}
    runs = {}
    for name in args.variants:
        path = cache / f"{name}-s{args.steps}-seed{args.seed}.json"
        if not path.exists():
            write_json(path, run_variant(cfg, args.workdir, name, VARIANTS[name], args.steps, args.every, args.seed))
        runs[name] = json.loads(path.read_text())
        last = runs[name]["trajectory"][-1]
        print(f"{name:>14}: rank {last['marker_rank_median']:.0f}, p {last['marker_probability_mean']:.3f}, "
              f"well-formed {last.get('val_factual_well_formed_pct', float('nan')):.1f} %, "
              f"cf EM {last.get('val_counterfactual_contextual_em_pct', float('nan')):.1f} %, {runs[name]['cpu_s']} CPU-s",
              flush=True)
    write_json(args.out, {"marker": MARKER, "steps": args.steps, "seed": args.seed, "static": static, "runs": runs,
                          "machine": {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
