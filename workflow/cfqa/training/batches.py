"""Training examples from the variant files, tokenized once, and padded batches.

An example is (input ids, target ids) in both model families; the family decides how a batch
is laid out (`collate`): an encoder-decoder reads the input and predicts the target as
`labels`; a decoder-only LM reads input + target as one sequence, with the loss on the target
tokens only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from cfqa.io.atomic_io import read_jsonl
from cfqa.formats import VARIANTS, format_input, format_target
from cfqa.layout import variant_file
from cfqa.model.model_family import ModelFamily

TokenizedExample = tuple[list[int], list[int]]

# How training batches are drawn (params `train.batching`), every epoch a seeded permutation:
#   random      consecutive slices of the permutation;
#   length      the permutation cut into chunks of `train.group_batches` batches, each chunk
#               sorted by length and cut into batches, the epoch's batches in random order: a
#               batch holds rows of similar length, so little of it is padding;
#   stratified  as `length`, but each variant of the mixture is sorted on its own and every
#               batch takes the same length quantile of each variant: every batch holds the
#               mixture's variants in their shares (short empty-context rows beside long ones).
# Sorting by length also sorts by variant (empty contexts are the short rows): on the embedded
# world 14.7 % of `length` batches hold one variant only, which an earlier single-seed run
# blamed for lower EM. Measured with three seeds (full fine-tuning, paired on seeds;
# benchmarks/batch_grouping.py): mean test contextual EM within 2.5 points of random batches
# for both groupings, with t-intervals of +-25 to +-60 points, since seed to seed random
# batches alone gave 69-96 % factual EM; the earlier drops were within that spread. Padded
# positions 29.5 % (random), 7.2 % (length), 16.0 % (stratified); CPU per run 395, 311, 304 s.
# The embedded default is stratified (the speed, and no single-variant batches, the one
# mechanism seen); the t5-large profile is length (stratified leaves 30 % padding at NQ's
# lengths, and its 8 accumulated micro-batches mix the variants within every optimizer step).
BATCHINGS = ("random", "length", "stratified")


def variant_rows(variants_dir: Path, split: str, variants: Sequence[str]) -> list[dict]:
    rows = []
    for variant in variants:
        path = variant_file(variants_dir, split, variant)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: variant file missing; run `cfqa counterfactuals`")
        rows.extend(read_jsonl(path))
    return rows


def variant_strata(rows: list[dict]) -> list[int]:
    """Each row's variant as a number (its place in VARIANTS): the strata of stratified batches."""
    return [VARIANTS.index(row["variant"]) for row in rows]


def text_pairs(rows: list[dict], target_format: str) -> list[tuple[str, str]]:
    return [(format_input(r["question"], r["context"]),
             format_target(r["contextual_answer"], r["parametric_answer"], target_format))
            for r in rows]


def tokenize_pairs(tokenizer, pairs: list[tuple[str, str]], max_input: int, max_target: int) -> list[TokenizedExample]:
    """Every target ends with the tokenizer's eos (at most max_target tokens in all): T5's
    tokenizer appends it itself, GPT-style tokenizers do not, and without it a decoder-only
    model never learns where an answer stops."""
    inputs = tokenizer([p[0] for p in pairs], truncation=True, max_length=max_input).input_ids
    targets = tokenizer([p[1] for p in pairs], truncation=True, max_length=max_target).input_ids
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos token: targets need one to end")
    targets = [t if t and t[-1] == eos else t[:max_target - 1] + [eos] for t in targets]
    return list(zip(inputs, targets))


def collate(examples: Sequence[TokenizedExample], pad_id: int,
            family: ModelFamily = ModelFamily.SEQ2SEQ) -> dict[str, torch.Tensor]:
    """A padded batch for the model family (read it with `cfqa.model.model_family.model_family`)."""
    if ModelFamily(family) is ModelFamily.CAUSAL:
        return collate_causal(examples, pad_id)
    return collate_seq2seq(examples, pad_id)


def collate_causal(examples: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Each row is input + target, padded on the right; labels copy the target tokens and are
    -100 (ignored by the loss) on the input and the padding, so the loss is on the answer only.
    The attention mask comes from the lengths, not from comparing with pad_id: GPT-style
    tokenizers often pad with their eos, which every target ends with."""
    width = max(len(source) + len(target) for source, target in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (source, target) in enumerate(examples):
        length = len(source) + len(target)
        input_ids[row, :length] = torch.tensor(list(source) + list(target))
        attention_mask[row, :length] = 1
        labels[row, len(source):length] = torch.tensor(target)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_seq2seq(examples: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads inputs with pad_id and labels with -100 (ignored by the loss)."""
    width_in = max(len(i) for i, _ in examples)
    width_out = max(len(t) for _, t in examples)
    input_ids = torch.full((len(examples), width_in), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width_out), -100, dtype=torch.long)
    for row, (source, target) in enumerate(examples):
        input_ids[row, :len(source)] = torch.tensor(source)
        labels[row, :len(target)] = torch.tensor(target)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": labels}


def length_order(examples: Sequence[TokenizedExample], indices: np.ndarray | None = None) -> np.ndarray:
    """`indices` (default: all) sorted by input length, then target length; ties keep their order."""
    if indices is None:
        indices = np.arange(len(examples))
    inputs = np.fromiter((len(examples[i][0]) for i in indices), dtype=np.int64, count=len(indices))
    targets = np.fromiter((len(examples[i][1]) for i in indices), dtype=np.int64, count=len(indices))
    return indices[np.lexsort((targets, inputs))]   # lexsort is stable; its last key is the primary one


class LengthGroupedBatches:
    """Seeded batches, optionally of similar length (a bucketed random sampler). Epoch e is
    fixed by (seed, e): a random permutation of the examples, cut into consecutive batches.
    With group_batches > 1 the permutation is cut into chunks of that many batches, each chunk
    sorted by length and cut into batches, and the epoch's batches put in random order: a
    batch then holds examples of similar length from a random part of the data. With `strata`
    (one label per example, e.g. its variant) a chunk is sorted within each stratum, and the
    chunk's examples are ordered by their length quantile within their stratum (ties by
    stratum), so that each batch takes the same quantile of every stratum. Either way
    resuming at any micro-step replays the same batches. Each epoch uses
    len(examples) // batch_size full batches (the remainder waits for a later permutation),
    or one batch of everything when there are fewer examples than batch_size."""

    def __init__(self, examples: Sequence[TokenizedExample], batch_size: int, seed: int,
                 group_batches: int = 1, strata: Sequence[int] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if group_batches < 1:
            raise ValueError(f"group_batches must be >= 1, got {group_batches}")
        if strata is not None and len(strata) != len(examples):
            raise ValueError(f"strata must label every example: {len(strata)} labels for {len(examples)} examples")
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.group_batches = group_batches
        self.strata = None if strata is None else np.asarray(strata)
        self.per_epoch = max(len(examples) // batch_size, 1)
        self._epoch: int | None = None
        self._batches: list[np.ndarray] = []

    def _sorted_chunk(self, indices: np.ndarray) -> np.ndarray:
        ordered = length_order(self.examples, indices)
        if self.strata is None:
            return ordered
        labels = self.strata[ordered]
        quantile = np.empty(len(ordered))
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            # The centre of each member's rank within its stratum, as a share of the stratum.
            quantile[members] = (np.arange(len(members)) + 0.5) / len(members)
        return ordered[np.lexsort((labels, quantile))]

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The example indices of every batch of `epoch`, in the order they are trained on."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.examples))[:self.per_epoch * self.batch_size]
            if self.group_batches > 1:
                chunk = self.group_batches * self.batch_size
                order = np.concatenate([self._sorted_chunk(order[start:start + chunk])
                                        for start in range(0, len(order), chunk)])
            batches = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.per_epoch)]
            if self.group_batches > 1:
                batches = [batches[i] for i in rng.permutation(self.per_epoch)]
            self._batches = batches
            self._epoch = epoch
        return self._batches

    def widest(self) -> list[TokenizedExample]:
        """The first epoch's batch with the most positions (input plus target width): a batch to
        measure a step's memory on that does not depend on which lengths the seed put first."""
        def positions(batch: np.ndarray) -> int:
            widths = [max(len(self.examples[i][part]) for i in batch) for part in (0, 1)]
            return sum(widths) * len(batch)
        return [self.examples[i] for i in max(self.epoch_batches(0), key=positions)]

    def __call__(self, index: int) -> list[TokenizedExample]:
        """The examples of micro-step `index` (epochs are consecutive)."""
        epoch, position = divmod(index, self.per_epoch)
        return [self.examples[i] for i in self.epoch_batches(epoch)[position]]


def training_batches(examples: Sequence[TokenizedExample], batch_size: int, seed: int, batching: str,
                     group_batches: int, strata: Sequence[int] | None = None) -> LengthGroupedBatches:
    """The sampler `train.batching` names (see BATCHINGS); `strata` (each example's variant) is
    read by `stratified` only, which without it has one stratum: length-grouped batches."""
    if batching == "random":
        return LengthGroupedBatches(examples, batch_size, seed)
    if batching == "length":
        return LengthGroupedBatches(examples, batch_size, seed, group_batches)
    if batching == "stratified":
        return LengthGroupedBatches(examples, batch_size, seed, group_batches, strata)
    raise ValueError(f"train.batching must be one of {', '.join(BATCHINGS)}, got {batching!r}")


def batch_at(examples: Sequence[TokenizedExample], step: int, batch_size: int, seed: int) -> list[TokenizedExample]:
    """The examples of micro-step `step` of random batches; a loop builds its sampler once instead."""
    return LengthGroupedBatches(examples, batch_size, seed)(step)


def fixed_sample(examples: Sequence[TokenizedExample], size: int, seed: int) -> list[TokenizedExample]:
    """`size` examples drawn without replacement by `seed`, in their original order; all of
    them when `size` is 0 or not smaller. The same (examples, size, seed) give the same sample
    in every run, so runs validated on it can be compared."""
    if size == 0 or len(examples) <= size:
        return list(examples)
    chosen = np.sort(np.random.default_rng(seed).choice(len(examples), size=size, replace=False))
    return [examples[i] for i in chosen]


def sequential_batches(examples: Sequence[TokenizedExample], batch_size: int) -> Iterator[list[TokenizedExample]]:
    for start in range(0, len(examples), batch_size):
        yield list(examples[start:start + batch_size])


def padding_share(batch: dict[str, torch.Tensor], pad_id: int,
                  family: ModelFamily = ModelFamily.SEQ2SEQ) -> tuple[int, int]:
    """(real tokens, padded positions) of a collated batch: inputs and labels together for a
    seq2seq batch; the one sequence of input + target for a causal batch."""
    if ModelFamily(family) is ModelFamily.CAUSAL:
        return int(batch["attention_mask"].sum()), batch["input_ids"].numel()
    real = int((batch["input_ids"] != pad_id).sum()) + int((batch["labels"] != -100).sum())
    return real, batch["input_ids"].numel() + batch["labels"].numel()
