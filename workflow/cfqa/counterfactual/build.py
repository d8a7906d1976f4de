"""Variants of a whole split, and of the `seen` set, with the reasons examples lost their
counterfactual. Pure: examples in, rows and counts out; the stage does the I/O.

Only an example whose answer is typed in a group and occurs in its context as a whole
mention (not only inside a longer name such as "South Africa") gets a counterfactual; the
partial mentions its counterfactual rows leave alone are counted. `train`/`validation`
keep factual, empty and random rows for every example; `test` keeps only the questions that
got a counterfactual, so its four variants hold the same questions in the same order.
`seen` re-asks sampled training questions with a fresh counterfactual and a fresh random
context (Longpre et al.'s train-overlap analysis).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from cfqa.counterfactual.examples import Example
from cfqa.counterfactual.sampling import (HashRing, SubstitutePool, SubstitutionPolicy, choose_random_context,
                                          choose_substitute, donor_ring, example_rng, stable_sample)
from cfqa.counterfactual.substitution import count_mentions
from cfqa.counterfactual.variants import counterfactual_row, empty_row, factual_row, random_row
from cfqa.formats import VARIANTS

UNTYPED = "untyped"
ANSWER_NOT_IN_CONTEXT = "answer_not_in_context"
ANSWER_ONLY_IN_LONGER_NAMES = "answer_only_in_longer_names"
NO_SUBSTITUTE = "no_substitute_available"
NO_RANDOM_CONTEXT = "no_random_context"
DROP_REASONS = (UNTYPED, ANSWER_NOT_IN_CONTEXT, ANSWER_ONLY_IN_LONGER_NAMES, NO_SUBSTITUTE, NO_RANDOM_CONTEXT)
# What substitution left alone: answer matches inside a longer name or number, summed over the
# counterfactual rows written; the rows that keep at least one; their questions.
PARTIAL_MENTION_COUNTS = ("mentions", "counterfactual_rows", "questions")

Track = Callable[[Iterable, str, int], Iterable]


def _untracked(items: Iterable, desc: str, total: int) -> Iterable:
    return items


@dataclass
class SplitVariants:
    rows: dict[str, list[dict]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    drops: Counter = field(default_factory=Counter)  # DROP_REASONS entry -> examples that lack that variant
    substitutes: dict[Any, str] = field(default_factory=dict)   # id -> (first) substitute used
    all_substitutes: dict[Any, list[str]] = field(default_factory=dict)  # id -> every substitute used
    random_donors: dict[Any, Any] = field(default_factory=dict)  # id -> id whose context was used
    skipped_partial_mentions: Counter = field(default_factory=Counter)  # PARTIAL_MENTION_COUNTS entry -> count
    # What the split drew from, kept so that `seen` draws from the same pool without rebuilding it.
    pool: SubstitutePool | None = field(default=None, repr=False)
    donors: HashRing | None = field(default=None, repr=False)

    def counts(self) -> dict[str, int]:
        return {variant: len(rows) for variant, rows in self.rows.items()}


def counterfactual_eligibility(example: Example) -> str | None:
    """Why the example cannot get a counterfactual (a DROP_REASONS entry), or None if it can."""
    if not example.typed:
        return UNTYPED
    mentions = count_mentions(example.context, example.answers)
    if mentions.whole == 0:
        return ANSWER_ONLY_IN_LONGER_NAMES if mentions.partial else ANSWER_NOT_IN_CONTEXT
    return None


def _count_skipped(result: SplitVariants, example: Example, rows: int) -> None:
    """Count the partial mentions that the example's `rows` counterfactual rows kept."""
    partial = count_mentions(example.context, example.answers).partial
    if partial and rows:
        result.skipped_partial_mentions["mentions"] += partial * rows
        result.skipped_partial_mentions["counterfactual_rows"] += rows
        result.skipped_partial_mentions["questions"] += 1


def build_split(split: str, examples: Sequence[Example], policy: SubstitutionPolicy,
                counterfactual_only: bool, track: Track = _untracked,
                counterfactuals_per_question: int = 1) -> SplitVariants:
    """The variants of one split; with `counterfactual_only` (test) only questions that got a
    counterfactual and a random context are kept, in all four variants. With
    `counterfactuals_per_question` > 1 a question gets that many counterfactual rows, each with
    a different substitute (training data: a fixed substitute per question can be memorized
    instead of read)."""
    pool, donors = SubstitutePool(examples), donor_ring(examples)
    result = SplitVariants(pool=pool, donors=donors)
    for example in track(examples, f"variants {split}", len(examples)):
        reason = counterfactual_eligibility(example)
        substitute = None
        if reason is None:
            rng = example_rng(policy.seed, f"{split}:substitute", example.id)
            substitute = choose_substitute(example, pool, policy, rng)
            reason = NO_SUBSTITUTE if substitute is None else None
        donor = choose_random_context(example, donors, example_rng(policy.seed, f"{split}:random", example.id))
        if donor is None:
            result.drops[NO_RANDOM_CONTEXT] += 1
        if reason is not None:
            result.drops[reason] += 1
        if counterfactual_only and (substitute is None or donor is None):
            continue
        result.rows["factual"].append(factual_row(example))
        if substitute is not None:
            result.rows["counterfactual"].append(counterfactual_row(example, substitute))
            result.substitutes[example.id] = substitute
            used = [substitute]
            for draw in range(1, counterfactuals_per_question):
                rng = example_rng(policy.seed, f"{split}:substitute:{draw}", example.id)
                extra = choose_substitute(example, pool, policy, rng, exclude=used)
                if extra is None:
                    break
                used.append(extra)
                result.rows["counterfactual"].append(counterfactual_row(example, extra))
            result.all_substitutes[example.id] = used
            _count_skipped(result, example, len(used))
        result.rows["empty"].append(empty_row(example))
        if donor is not None:
            result.rows["random"].append(random_row(example, donor))
            result.random_donors[example.id] = donor.id
    return result


def build_seen(train: Sequence[Example], train_variants: SplitVariants, size: int,
               policy: SubstitutionPolicy, track: Track = _untracked) -> tuple[SplitVariants, int]:
    """`size` training questions that got a counterfactual, re-asked with their training
    factual context, a fresh counterfactual, a fresh random context and the empty context.
    Also returns how many fresh substitutes differ from the training one (all, unless the
    pool holds no other)."""
    eligible = [e for e in train if e.id in train_variants.substitutes and e.id in train_variants.random_donors]
    chosen = stable_sample(eligible, size, policy.seed, "seen", key=lambda e: e.id)
    pool = train_variants.pool if train_variants.pool is not None else SubstitutePool(train)
    donors = train_variants.donors if train_variants.donors is not None else donor_ring(train)
    result = SplitVariants()
    fresh = 0
    for example in track(chosen, "variants seen", len(chosen)):
        used = train_variants.all_substitutes.get(example.id) or [train_variants.substitutes[example.id]]
        rng = example_rng(policy.seed, "seen:substitute", example.id)
        substitute = choose_substitute(example, pool, policy, rng, exclude=used)
        if substitute is None:
            substitute = used[0]  # the pool holds no other acceptable substitute
        fresh += substitute not in used
        rng = example_rng(policy.seed, "seen:random", example.id)
        donor = (choose_random_context(example, donors, rng, exclude_ids=[train_variants.random_donors[example.id]])
                 or choose_random_context(example, donors, rng))
        result.rows["factual"].append(factual_row(example))
        result.rows["counterfactual"].append(counterfactual_row(example, substitute))
        result.rows["empty"].append(empty_row(example))
        result.rows["random"].append(random_row(example, donor))
        result.substitutes[example.id] = substitute
        result.random_donors[example.id] = donor.id
        _count_skipped(result, example, 1)
    return result, fresh


def type_histogram(examples: Iterable[Example], ids: set | None = None) -> dict[str, int]:
    """Examples per answer-type group ("untyped" for none), optionally only those in `ids`."""
    counts = Counter(e.group or UNTYPED for e in examples if ids is None or e.id in ids)
    return dict(sorted(counts.items()))
