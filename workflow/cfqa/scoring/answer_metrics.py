"""Answer scoring: SQuAD normalization, exact match, token F1, a lenient subset/superset match,
and Longpre et al.'s memorization classes on counterfactual contexts. Pure functions.

Written here (a few lines) rather than pulled from `evaluate`/`datasets` metric scripts, which
are downloaded from a hub at run time.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles, single spaces. Two
    answers are "the same answer" when their normalized forms are equal."""
    text = text.lower().translate(_DROP_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Iterable[str]) -> bool:
    normalized = normalize_answer(prediction)
    return any(normalized == normalize_answer(gold) for gold in golds)


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def best_f1(prediction: str, golds: Iterable[str]) -> float:
    return max((token_f1(prediction, gold) for gold in golds), default=0.0)


def _contains(longer: list[str], shorter: list[str]) -> bool:
    width = len(shorter)
    return any(longer[i:i + width] == shorter for i in range(len(longer) - width + 1))


def lenient_match(prediction: str, golds: Iterable[str]) -> bool:
    """Exact match, or one answer's tokens appear contiguously in the other's
    ("18 january 1981" vs "in 18 january 1981"). True wherever `exact_match` is, including
    answers that both normalize to nothing ("the" vs "a"); containment needs tokens on both
    sides, so an empty answer is not "contained" in every other."""
    normalized = normalize_answer(prediction)
    predicted = normalized.split()
    for gold in golds:
        expected_text = normalize_answer(gold)
        if expected_text == normalized:
            return True
        expected = expected_text.split()
        if predicted and expected and (_contains(predicted, expected) or _contains(expected, predicted)):
            return True
    return False


def memorization_class(prediction: str, originals: Iterable[str], substitute: str) -> str:
    """'original' (the memorized answer), 'substitute' (the context's answer) or 'other'."""
    if exact_match(prediction, [substitute]):
        return "substitute"
    if exact_match(prediction, originals):
        return "original"
    return "other"


def memorization_ratio(original: int, substitute: int) -> float | None:
    """Longpre et al.'s M_R = p_o / (p_o + p_s); None when neither was predicted."""
    total = original + substitute
    return original / total if total else None
