"""Finding gold answers in a context and replacing them by a substitute.

A match is case-insensitive and bounded by non-word characters (or the text's ends), so
"France" matches "FRANCE," but not "Frances"; whitespace inside an answer matches any run of
whitespace. All gold answers are matched in one pass with the longest first, so "New York
City" is replaced whole rather than leaving " City" behind a replaced "New York", and
replaced text is never scanned again.
"""
from __future__ import annotations

import functools
import re
from typing import Iterable


def _answer_regex(answer: str) -> str:
    return r"\s+".join(re.escape(part) for part in answer.split())


def answers_pattern(answers: Iterable[str]) -> re.Pattern | None:
    """One case-insensitive, word-bounded pattern for all answers, longest first (None if none)."""
    return _compiled_pattern(tuple(answers))


# Substitute checks test the same candidate answers again and again; compiling is the cost.
@functools.lru_cache(maxsize=1 << 16)
def _compiled_pattern(answers: tuple[str, ...]) -> re.Pattern | None:
    distinct = {" ".join(a.split()).lower(): a for a in answers if a and a.strip()}
    if not distinct:
        return None
    ordered = sorted(distinct.values(), key=lambda a: (-len(a), a))
    alternatives = "|".join(_answer_regex(a) for a in ordered)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def answer_in_context(context: str, answers: Iterable[str]) -> bool:
    pattern = answers_pattern(answers)
    return pattern is not None and pattern.search(context) is not None


def replace_answers(context: str, answers: Iterable[str], substitute: str) -> tuple[str, int]:
    """`context` with every occurrence of every answer replaced by `substitute`, and the count."""
    pattern = answers_pattern(answers)
    if pattern is None:
        return context, 0
    # A function replacement keeps backslashes in the substitute literal.
    return pattern.subn(lambda _match: substitute, context)
