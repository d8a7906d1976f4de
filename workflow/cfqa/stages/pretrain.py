"""Stage `pretrain`: the base model every method fine-tunes, saved with save_pretrained
(safetensors) together with its tokenizer.

Embedded default (`pretrain.family`): `t5`, a sentencepiece tokenizer and a tiny T5
pretrained here with span corruption on the world's corpus, then an LM-adapted copy
(prefix-LM continuation, as in Lester et al.'s prompt-tuning backbone); `gpt_neo`, a
byte-level BPE tokenizer and a tiny GPT-Neo pretrained with the next-token objective, whose
LM-adapted backbone is the same model (a causal LM already is a language model). Real runs:
`pretrain.hub_id` (and `pretrain.lm_adapted_hub_id`) name hub models instead, loaded offline
from the commit params.yaml `hub.models` pins, as `cfqa fetch` put it in the run's cache
(safetensors only: a .bin-only checkpoint was converted there); each saved backbone records
its hub commit in hub_source.json. A hub id may also name a local save_pretrained directory.
"""
from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from cfqa.io.atomic_io import atomic_dir, write_json
from cfqa.config import PRETRAIN_FAMILIES, Config, ConfigError, PretrainConfig
from cfqa.model.hub import is_local_directory, local_model_dir, pin_of, write_source_record
from cfqa.io.logs import get_logger
from cfqa.model.model_family import ModelFamily, family_of
from cfqa.pretraining import loop
from cfqa.pretraining.causal_lm import pretrain_causal_lm
from cfqa.pretraining.model import new_tiny_t5
from cfqa.pretraining.tokenizer import EXTRA_IDS, load_t5_tokenizer, train_sentencepiece
from cfqa.io.timing_files import write_timing
from cfqa.training.optimization import seed_everything

log = get_logger(__name__)
CORPUS = "corpus.txt"


def run(cfg: Config, raw: Path, out: Path, out_lm: Path, cache: Path) -> None:
    torch.set_num_threads(cfg.pretrain.threads)
    if cfg.pretrain.hub_id:
        save_hub_models(cfg.pretrain, out, out_lm, hub_models=cfg.hub.models, cache=cache)
    elif cfg.pretrain.family == "gpt_neo":
        pretrain_embedded_causal(cfg.pretrain, raw / CORPUS, out, out_lm)
    else:
        pretrain_embedded(cfg.pretrain, raw / CORPUS, out, out_lm)


def save_hub_models(cfg: PretrainConfig, out: Path, out_lm: Path, *, hub_models: Mapping | None = None,
                    cache: Path | None = None) -> None:
    """The hub backbones (or local save_pretrained directories) saved as `out` and `out_lm`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    for hub_id, target in ((cfg.hub_id, out), (cfg.lm_adapted_hub_id or cfg.hub_id, out_lm)):
        pin = None
        if is_local_directory(hub_id):
            source = Path(hub_id)
            log.info("loading %s, a local directory (safetensors only)", source)
        else:
            if cache is None:
                raise ValueError(f"pretrain.hub_id {hub_id!r}: loading a hub model needs the run's cache (--cache)")
            pin = pin_of(hub_models or {}, hub_id)
            source = local_model_dir(pin, cache)
            log.info("loading %s at commit %s from %s, offline (safetensors only%s)", hub_id, pin.revision, source,
                     "; converted from .bin by `cfqa fetch`" if pin.converts else "")
        # The checkpoint's config says its family; the model name never does.
        family = family_of(AutoConfig.from_pretrained(source, local_files_only=True))
        if family is not PRETRAIN_FAMILIES[cfg.family]:
            raise ConfigError(f"pretrain.family: {cfg.family} is the {PRETRAIN_FAMILIES[cfg.family].value} family, but "
                              f"the hub model {hub_id!r} is a {family.value} model (its config says so); set "
                              f"pretrain.family to match the model")
        auto = AutoModelForSeq2SeqLM if family is ModelFamily.SEQ2SEQ else AutoModelForCausalLM
        model = auto.from_pretrained(source, use_safetensors=True, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        if tokenizer.pad_token is None:
            # GPT-style hub tokenizers have no pad token; batches mask padding by length.
            tokenizer.pad_token = tokenizer.eos_token
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if pin is not None:
                write_source_record(tmp, pin, source)
        log.info("wrote %s", target)


def pretrain_embedded(cfg: PretrainConfig, corpus: Path, out: Path, out_lm: Path) -> None:
    if not corpus.is_file():
        raise FileNotFoundError(f"{corpus}: the pretraining corpus is missing (data.source "
                                f"embedded writes it; real data needs pretrain.hub_id)")
    seed_everything(cfg.seed)
    started = time.perf_counter()
    with atomic_dir(out) as base_dir, atomic_dir(out_lm) as lm_dir:
        train_sentencepiece(corpus, base_dir, cfg.vocab_size, cfg.seed)
        tokenizer = load_t5_tokenizer(base_dir)
        sentences = corpus.read_text(encoding="utf-8").splitlines()
        token_ids = tokenizer(sentences, add_special_tokens=False).input_ids
        sequences = loop.pack(token_ids, cfg.max_length)
        log.info("read %s: %d sentences, %d tokens, %d packed sequences, vocabulary %d",
                 corpus, len(sentences), sum(map(len, token_ids)), len(sequences), len(tokenizer))
        sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(EXTRA_IDS)])
        eos = tokenizer.eos_token_id

        model = new_tiny_t5(cfg, vocab_size=len(tokenizer))
        span_losses = loop.pretrain(
            model, sequences,
            lambda seq, rng: loop.span_corruption_example(seq, cfg, sentinels, eos, rng),
            steps=cfg.steps, cfg=cfg, pad_id=tokenizer.pad_token_id, desc="span corruption")
        model.save_pretrained(base_dir)
        tokenizer.save_pretrained(base_dir)

        lm_model = copy.deepcopy(model)
        lm_losses = loop.pretrain(
            lm_model, sequences, lambda seq, rng: loop.prefix_lm_example(seq, eos, rng),
            steps=cfg.lm_adapt_steps, cfg=cfg, pad_id=tokenizer.pad_token_id,
            desc="LM adaptation") if cfg.lm_adapt_steps else []
        lm_model.save_pretrained(lm_dir)
        tokenizer.save_pretrained(lm_dir)
        (lm_dir / "spiece.model").write_bytes((base_dir / "spiece.model").read_bytes())
        for directory, losses, objective in ((base_dir, span_losses, "span_corruption"),
                                             (lm_dir, lm_losses, "prefix_lm")):
            write_json(directory / "pretrain.json", {
                "objective": objective,
                "steps": len(losses),
                "final_loss": float(np.mean(losses[-50:])) if losses else None,
                "parameters": sum(p.numel() for p in model.parameters()),
                "vocabulary": len(tokenizer),
            })
            # Apart from the record: the backbone's hash covers its content, not when it was made.
            write_timing(directory, "pretrain", time.perf_counter() - started)
    log.info("wrote %s and %s in %.1f s", out, out_lm, time.perf_counter() - started)


def pretrain_embedded_causal(cfg: PretrainConfig, corpus: Path, out: Path, out_lm: Path) -> None:
    """The tiny GPT-Neo (cfqa.pretraining.causal_lm) in `out`, and the same files in `out_lm`:
    the lm_adapted backbone of a causal family needs no LM adaptation."""
    if not corpus.is_file():
        raise FileNotFoundError(f"{corpus}: the pretraining corpus is missing (data.source "
                                f"embedded writes it; real data needs pretrain.hub_id)")
    started = time.perf_counter()
    with atomic_dir(out) as base_dir, atomic_dir(out_lm) as lm_dir:
        record = pretrain_causal_lm(cfg, corpus, base_dir)
        shutil.copytree(base_dir, lm_dir, dirs_exist_ok=True)
    log.info("next-token pretraining: %d steps, loss %.3f -> %.3f, %d parameters, vocabulary %d", record["steps"],
             record["first_loss"] or float("nan"), record["final_loss"] or float("nan"), record["parameters"],
             record["vocabulary"])
    log.info("a causal LM is already a language model: no LM adaptation (pretrain.lm_adapt_steps unused); "
             "%s is a copy of %s", out_lm, out)
    log.info("wrote %s and %s in %.1f s", out, out_lm, time.perf_counter() - started)
