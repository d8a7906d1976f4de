"""Tokenization once per (data, tokenizer), shared by every job (stage `tokenize`).

Every variant file of every split is tokenized once per distinct tokenizer of the backbones
(`models/base`, `models/base_lm`; identical tokenizers are tokenized once): inputs with the
tokenizer's special tokens and no truncation, targets in both formats. Jobs apply their own
`max_input_length` / `max_target_length` when they load (`load_examples`), exactly as
`tokenize_pairs` truncates (tests compare the two), so one tokenization serves every method's
settings. At T5-large scale (~420k training and validation rows) this takes minutes a job would
otherwise spend on the CPU while holding its GPU.

Layout: `<dir>/index.json` maps each backbone to its tokenizer's fingerprint and records the
sha256 of every variant file read; `<dir>/<fingerprint>/<split>/<variant>.npz` holds flat int32
arrays with offsets. Examples load as numpy views into those arrays (no Python list per token).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from cfqa.io.atomic_io import atomic_dir, read_json, read_jsonl, write_json
from cfqa.io.digests import sha256_file
from cfqa.formats import VARIANTS, format_input, format_target
from cfqa.layout import variant_file
from cfqa.io.logs import get_logger
from cfqa.io.progress import progress

log = get_logger(__name__)

INDEX = "index.json"
SPLITS = ("train", "validation", "test", "seen")
TARGET_FORMATS = ("disentangled", "single")
_PROBE = "a question"


# (input ids, target ids): what cfqa.training.batches calls a TokenizedExample, as int32 views.
Example = tuple[np.ndarray, np.ndarray]


class StaleTokenization(ValueError):
    """The tokenized data is not of the variant files or the tokenizer a job has now."""


def fingerprint(tokenizer) -> str:
    """Identifies a tokenizer's behaviour: its serialized backend and special tokens. The
    backend's truncation and padding settings are left out: each call sets them."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    backend.pop("truncation", None)
    backend.pop("padding", None)
    digest = hashlib.sha256(json.dumps(backend, sort_keys=True).encode())
    digest.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    return digest.hexdigest()[:16]


def special_layout(tokenizer) -> tuple[list[int], list[int]]:
    """(prefix, suffix): the special tokens the tokenizer puts around a single sequence."""
    bare = tokenizer(_PROBE, add_special_tokens=False).input_ids
    full = tokenizer(_PROBE).input_ids
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    raise ValueError(f"{type(tokenizer).__name__}: cannot tell its special tokens from the text around them")


def _flat(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in sequences])
    values = np.fromiter((t for s in sequences for t in s), dtype=np.int32, count=int(offsets[-1]))
    return values, offsets


def _tokenize_file(tokenizer, rows: list[dict]) -> dict[str, np.ndarray]:
    arrays = {}
    inputs = tokenizer([format_input(r["question"], r["context"]) for r in rows]).input_ids
    arrays["inputs"], arrays["inputs_offsets"] = _flat(inputs)
    for target_format in TARGET_FORMATS:
        targets = tokenizer([format_target(r["contextual_answer"], r["parametric_answer"], target_format)
                             for r in rows]).input_ids
        arrays[f"targets_{target_format}"], arrays[f"targets_{target_format}_offsets"] = _flat(targets)
    return arrays


def write_tokenized(variants: Path, backbones: dict[str, Path], out: Path) -> dict:
    """Tokenizes every variant file of `variants` with each distinct tokenizer of `backbones`
    (name -> backbone directory) into `out`; returns the index."""
    from transformers import AutoTokenizer

    files = sorted(p for split in SPLITS for p in (variants / split).glob("*.jsonl")
                   if p.stem in VARIANTS)
    index: dict = {"backbones": {}, "variant_sha256": {f"{p.parent.name}/{p.name}": sha256_file(p) for p in files}}
    with atomic_dir(out) as tmp:
        for name, directory in backbones.items():
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            key = fingerprint(tokenizer)
            index["backbones"][name] = key
            if (tmp / key).is_dir():
                log.info("%s: the same tokenizer as an earlier backbone (%s): tokenized once", directory, key)
                continue
            for path in progress(files, desc=f"tokenize {name}", unit="file"):
                rows = list(read_jsonl(path))
                arrays = _tokenize_file(tokenizer, rows)
                (tmp / key / path.parent.name).mkdir(parents=True, exist_ok=True)
                np.savez(tmp / key / path.parent.name / f"{path.stem}.npz", **arrays)
                log.info("%s: %d rows, %d input tokens (%s)", path, len(rows), int(arrays["inputs_offsets"][-1]), key)
        write_json(tmp / INDEX, index)
    return index


def load_examples(tokenized: Path, backbone: str, tokenizer, variants: Path, split: str,
                  mixture: Sequence[str], target_format: str, max_input: int, max_target: int,
                  ) -> tuple[list[Example], list[int]]:
    """(examples, each example's variant index) of `split` for `mixture`, in file order,
    truncated as `tokenize_pairs` truncates; StaleTokenization when the files changed since."""
    index = read_json(tokenized / INDEX)
    key = index["backbones"].get(backbone)
    if key is None or key != fingerprint(tokenizer):
        raise StaleTokenization(f"{tokenized}: not tokenized with backbone {backbone!r}'s tokenizer; rerun "
                                f"`cfqa tokenize`")
    prefix, suffix = special_layout(tokenizer)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos token: targets need one to end")
    examples, strata = [], []
    for variant in mixture:
        path = variant_file(variants, split, variant)
        name = path.relative_to(variants).as_posix()     # the index's key, as write_tokenized names it
        if not path.is_file():
            raise FileNotFoundError(f"{path}: variant file missing; run `cfqa counterfactuals`")
        if index["variant_sha256"].get(name) != sha256_file(path):
            raise StaleTokenization(f"{tokenized}: tokenized from another {path}; rerun `cfqa tokenize`")
        arrays = np.load(tokenized / key / split / f"{variant}.npz")
        inputs, input_offsets = arrays["inputs"], arrays["inputs_offsets"]
        targets, target_offsets = arrays[f"targets_{target_format}"], arrays[f"targets_{target_format}_offsets"]
        for row in range(len(input_offsets) - 1):
            source = inputs[input_offsets[row]:input_offsets[row + 1]]
            if len(source) > max_input:      # what truncation=True, max_length=max_input gives
                body = source[len(prefix):len(source) - len(suffix)]
                source = np.concatenate([prefix, body[:max_input - len(prefix) - len(suffix)], suffix]).astype(np.int32)
            target = targets[target_offsets[row]:target_offsets[row + 1]]
            if len(target) > max_target:
                body = target[len(prefix):len(target) - len(suffix)]
                target = np.concatenate([prefix, body[:max_target - len(prefix) - len(suffix)], suffix]).astype(np.int32)
            if len(target) == 0 or target[-1] != eos:     # every target ends with eos (tokenize_pairs)
                target = np.append(target[:max_target - 1], eos).astype(np.int32)
            examples.append((source, target))
            strata.append(VARIANTS.index(variant))
    return examples, strata

