"""Finding gold answers in a context and replacing their whole mentions by a substitute.

A match is case-insensitive and bounded by non-word characters (or the text's ends), so
"France" matches "FRANCE," and "France's" but not "Frances"; whitespace inside an answer
matches any run of whitespace. All gold answers are matched in one pass with the longest
first, so "New York City" is replaced whole rather than leaving " City" behind a replaced
"New York", and replaced text is never scanned again.

Only WHOLE mentions are replaced. A word-bounded match can still be part of a longer name or
number, and replacing it would rename something else: "Africa" in "South Africa" would
become "South Asia", "French" in "French Guiana" "Spanish Guiana", "1" in "1,330,068"
"4,330,068". (Longpre et al.'s substitution replaces every word-bounded match and has this
fault.) A match is a PARTIAL mention, left alone and counted, when
- its first character is a letter and a capitalized word (not a stop word such as "In" or
  "The") stands right before it, joined by spaces or a hyphen ("South Africa",
  "Guinea-Bissau") or by "of"/"of the" ("Republic of the Congo", "Gulf of Mexico");
- its last character is a letter and a capitalized word that is not a stop word follows,
  joined by spaces or a hyphen ("French Guiana", "French Southern Territories");
- its first character is a digit preceded by digit + "." or ",", or its last a digit
  followed by "." or "," + digit ("1,330,068", "1.5", "2.1").
A number beside a capitalized word ("May 1990") stays a whole mention: it is a date's part,
not a name's. A question whose answer has only partial mentions gets no counterfactual.

Written here because no library does this: spaCy's Matcher and EntityRuler find spans but
leave the decision of what a span belongs to (and the replacement) to the caller, and
whole-word replacers (regular expressions, flashtext) cannot tell "Africa" from "South
Africa". The stop words that keep "In Africa" a whole mention are spaCy's English list.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

# Spaces (no line breaks) or one hyphen join the words of a name.
_JOIN = r"(?:[^\S\r\n]+|[-\u2010\u2011])"
_SPACE = r"[^\S\r\n]+"
_WORD = r"(?<![\w'])([^\W\d_]\w*)"  # a whole word that starts with a letter
_WORD_JOINED_BEFORE = re.compile(rf"{_WORD}{_JOIN}\Z")
_WORD_OF_BEFORE = re.compile(rf"{_WORD}{_SPACE}of{_SPACE}(?:the{_SPACE})?\Z", re.IGNORECASE)
_WORD_JOINED_AFTER = re.compile(rf"{_JOIN}([^\W\d_]\w*)")
_DIGIT_GROUP_BEFORE = re.compile(r"\d[.,]\Z")
_DIGIT_GROUP_AFTER = re.compile(r"[.,]\d")
# Enough text before a match to hold "<word> of the " for any ordinary word.
_LOOK_BEHIND = 64


@functools.cache
def _stop_words() -> frozenset[str]:
    # Imported on first need: loading spaCy takes seconds, and most contexts never ask.
    from spacy.lang.en.stop_words import STOP_WORDS
    return frozenset(STOP_WORDS)


def _is_name_word(word: str) -> bool:
    return word[0].isupper() and word.lower() not in _stop_words()


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


def is_partial_mention(context: str, start: int, end: int) -> bool:
    """Whether context[start:end], a word-bounded match of an answer, is part of a longer
    name or number (see the module docstring for the rules)."""
    first, last = context[start], context[end - 1]
    before = context[max(0, start - _LOOK_BEHIND):start]
    if first.isalpha():
        joined = _WORD_JOINED_BEFORE.search(before)
        if joined is not None and _is_name_word(joined.group(1)):
            return True
        of = _WORD_OF_BEFORE.search(before)
        if of is not None and _is_name_word(of.group(1)):
            return True
    elif first.isdigit() and _DIGIT_GROUP_BEFORE.search(before):
        return True
    if last.isalpha():
        joined = _WORD_JOINED_AFTER.match(context, end)
        return joined is not None and _is_name_word(joined.group(1))
    return last.isdigit() and _DIGIT_GROUP_AFTER.match(context, end) is not None


def _mentions(context: str, answers: Iterable[str]) -> Iterator[tuple[re.Match, bool]]:
    """Every word-bounded match of any answer, with whether it is a partial mention."""
    pattern = answers_pattern(answers)
    if pattern is None:
        return
    for match in pattern.finditer(context):
        yield match, is_partial_mention(context, match.start(), match.end())


@dataclass(frozen=True)
class MentionCounts:
    whole: int     # mentions that a counterfactual replaces
    partial: int   # matches inside a longer name or number, left alone


def count_mentions(context: str, answers: Iterable[str]) -> MentionCounts:
    whole = partial = 0
    for _match, is_partial in _mentions(context, answers):
        partial += is_partial
        whole += not is_partial
    return MentionCounts(whole=whole, partial=partial)


def answer_in_context(context: str, answers: Iterable[str]) -> bool:
    """Whether any answer occurs at all, whole or inside a longer name: the strict test for
    contexts and substitutes that must not name an answer."""
    pattern = answers_pattern(answers)
    return pattern is not None and pattern.search(context) is not None


def whole_mention_in_context(context: str, answers: Iterable[str]) -> bool:
    """Whether some answer occurs as a whole mention (one a counterfactual would replace)."""
    return any(not is_partial for _match, is_partial in _mentions(context, answers))


def replace_answers(context: str, answers: Iterable[str], substitute: str) -> tuple[str, int]:
    """`context` with every whole mention of every answer replaced by `substitute`, and how
    many were replaced; partial mentions are kept as they are."""
    pieces, replaced, kept_until = [], 0, 0
    for match, is_partial in _mentions(context, answers):
        if is_partial:
            continue
        # Joined as text, so backslashes in the substitute stay literal.
        pieces += [context[kept_until:match.start()], substitute]
        kept_until = match.end()
        replaced += 1
    pieces.append(context[kept_until:])
    return "".join(pieces), replaced
