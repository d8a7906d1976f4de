"""Seeded choices that stay put when the data grow.

Each example draws from its own random.Random seeded by (seed, purpose, id), so its draws do
not depend on the order of the file. Draws pick from a hash ring rather than by list index:
inserting one candidate would shift every later index and change most examples' choices,
whereas on a ring it only takes the arcs it lands on. Subsets are taken by per-id hash rank.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

import numpy as np

from cfqa.counterfactual.examples import Example
from cfqa.scoring.answer_metrics import normalize_answer
from cfqa.counterfactual.substitution import answer_in_context, answers_pattern

T = TypeVar("T")

POLICIES = ("corpus_substitution", "type_swap")
WITHIN = ("label", "group")
# Random draws tried before walking the whole ring: most draws are acceptable, and a full
# walk per example would make the stage quadratic on NQ-sized splits.
_QUICK_DRAWS = 16
# Points per item on a ring: an item's chance is its share of the circle, whose spread
# shrinks as 1/sqrt(points) (measured, 200 items: 0.57-1.47x the mean at 32 points). Answer
# rings are small and should be near uniform; donor rings are large, and which other
# context is drawn matters little.
ANSWER_RING_POINTS = 128
DONOR_RING_POINTS = 16


@dataclass(frozen=True)
class SubstitutionPolicy:
    """How substitutes are chosen (params.yaml `counterfactuals`)."""

    policy: str = "corpus_substitution"   # corpus_substitution: same type; type_swap: another group
    within: str = "label"                 # "same type" means same spaCy label, or same group
    seed: int = 0

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"counterfactuals.policy must be one of {POLICIES}, got {self.policy!r}")
        if self.within not in WITHIN:
            raise ValueError(f"counterfactuals.substitute_within must be one of {WITHIN}, got {self.within!r}")


def example_rng(seed: int, purpose: str, example_id: Any) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and platforms.
    return random.Random(f"{seed}:{purpose}:{example_id}")


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _ring_points(key: str, points: int) -> bytes:
    """`points` big-endian 64-bit positions on the ring for one key."""
    return hashlib.shake_128(key.encode()).digest(8 * points)


def stable_sample(items: Sequence[T], size: int, seed: int, purpose: str,
                  key: Callable[[T], Any] = lambda item: item) -> list[T]:
    """`size` items chosen by the hash rank of their key, returned in their original order."""
    ranked = sorted(range(len(items)), key=lambda i: _hash64(f"{seed}:{purpose}:{key(items[i])}"))
    chosen = set(ranked[:size])
    return [item for i, item in enumerate(items) if i in chosen]


class HashRing(Generic[T]):
    """Items placed on a 64-bit circle at hashes of their key; a draw takes the item at or
    after a random point, so each item's chance is its share of the circle (near uniform)."""

    def __init__(self, items: Iterable[T], key: Callable[[T], str], points: int = ANSWER_RING_POINTS):
        self.items: tuple[T, ...] = tuple(items)
        # numpy arrays: an NQ-sized split puts millions of points on the ring.
        positions = np.frombuffer(b"".join(_ring_points(key(item), points) for item in self.items), dtype=">u8")
        order = np.argsort(positions, kind="stable")
        self._points = positions[order].astype(np.uint64)
        self._owners = (order // points).astype(np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def _at(self, point: int) -> int:
        return int(np.searchsorted(self._points, np.uint64(point))) % len(self._points)

    def draw(self, rng: random.Random, acceptable: Callable[[T], bool]) -> T | None:
        """An acceptable item, or None when there is none."""
        if not self.items:
            return None
        for _ in range(_QUICK_DRAWS):
            item = self.items[int(self._owners[self._at(rng.getrandbits(64))])]
            if acceptable(item):
                return item
        # Walk the circle from a random point: the first acceptable item clockwise.
        start, checked = self._at(rng.getrandbits(64)), set()
        for offset in range(len(self._points)):
            index = int(self._owners[(start + offset) % len(self._points)])
            if index not in checked:
                checked.add(index)
                if acceptable(self.items[index]):
                    return self.items[index]
                if len(checked) == len(self.items):
                    break
        return None


def donor_ring(examples: Iterable[Example]) -> HashRing[Example]:
    """The examples whose contexts may serve as another question's random context."""
    return HashRing(examples, key=lambda example: str(example.id), points=DONOR_RING_POINTS)


def _answer_ring(answers: Iterable[str]) -> HashRing[str]:
    return HashRing(answers, key=normalize_answer)


_EMPTY_RING: HashRing = HashRing((), key=str)


class SubstitutePool:
    """The distinct typed answers of one split, by spaCy label and by group, in file order.

    Answers are distinct after SQuAD normalization; the first surface form seen is kept.
    """

    def __init__(self, examples: Iterable[Example]):
        by_label: dict[str, dict[str, str]] = {}
        by_group: dict[str, dict[str, str]] = {}
        for example in examples:
            if not example.typed:
                continue
            normalized = normalize_answer(example.answer)
            if not normalized:
                continue
            by_label.setdefault(example.label, {}).setdefault(normalized, example.answer)
            by_group.setdefault(example.group, {}).setdefault(normalized, example.answer)
        self.by_label = {k: _answer_ring(v.values()) for k, v in by_label.items()}
        self.by_group = {k: _answer_ring(v.values()) for k, v in by_group.items()}
        self._other_groups: dict[str, HashRing[str]] = {}

    def candidates(self, example: Example, policy: SubstitutionPolicy) -> HashRing[str]:
        if not example.typed:
            return _EMPTY_RING
        if policy.policy == "type_swap":
            # "Another type" is another Longpre group whatever `within` says: GPE for LOC is
            # the same kind of answer, not a type swap.
            return self._answers_outside(example.group)
        if policy.within == "label":
            return self.by_label.get(example.label, _EMPTY_RING)
        return self.by_group.get(example.group, _EMPTY_RING)

    def _answers_outside(self, group: str) -> HashRing[str]:
        if group not in self._other_groups:
            self._other_groups[group] = _answer_ring(
                answer for name in sorted(self.by_group) if name != group for answer in self.by_group[name].items)
        return self._other_groups[group]


def choose_substitute(example: Example, pool: SubstitutePool, policy: SubstitutionPolicy,
                      rng: random.Random, exclude: Iterable[str] = ()) -> str | None:
    """A substitute for the example's answer under the policy, or None if the pool has none.

    Never a gold answer (after SQuAD normalization) nor one of `exclude`; never a string that
    contains a gold answer or already occurs in the context, so the counterfactual context
    names the substitute, and only it, where the answer was.
    """
    banned = {normalize_answer(a) for a in (*example.answers, *exclude)}
    gold = answers_pattern(example.answers)

    def acceptable(candidate: str) -> bool:
        return (normalize_answer(candidate) not in banned
                and (gold is None or gold.search(candidate) is None)
                and not answer_in_context(example.context, [candidate]))

    return pool.candidates(example, policy).draw(rng, acceptable)


def choose_random_context(example: Example, donors: HashRing[Example], rng: random.Random,
                          exclude_ids: Iterable[Any] = ()) -> Example | None:
    """Another example whose context neither is this example's context nor contains any of
    its gold answers (None when there is none); `exclude_ids` are donors to avoid."""
    excluded = set(exclude_ids)
    gold = answers_pattern(example.answers)
    own_context = example.context.strip()

    def acceptable(donor: Example) -> bool:
        return (donor.id != example.id and donor.id not in excluded
                and donor.context.strip() != own_context
                and (gold is None or gold.search(donor.context) is None))

    return donors.draw(rng, acceptable)
