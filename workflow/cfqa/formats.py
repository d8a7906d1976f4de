"""DisentQA's text formats: model input, training target, and parsing a generated answer.

Input:  "question: {q}?\ncontext: {c}"
Target: "contextual: {a_c}\nparametric: {a_p}" (disentangled) or "contextual: {a_c}" (single).
T5's sentencepiece normalization turns "\n" into a space, so generations are parsed by the
markers, never by the newline.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

UNANSWERABLE = "unanswerable"
VARIANTS = ("factual", "counterfactual", "empty", "random")
TARGET_FORMATS = ("disentangled", "single")

_QUESTION = "question:"
_CONTEXT = "context:"
_CONTEXTUAL = "contextual:"
_PARAMETRIC = "parametric:"
# The fixed strings every input or target holds (a tokenizer trained here keeps each whole).
MARKERS = (_QUESTION, _CONTEXT, _CONTEXTUAL, _PARAMETRIC, UNANSWERABLE)


def format_input(question: str, context: str) -> str:
    question = question.strip().rstrip("?").strip()
    return f"{_QUESTION} {question}?\n{_CONTEXT} {context.strip()}"


def format_target(contextual: str, parametric: str, target_format: str) -> str:
    if target_format == "disentangled":
        return f"{_CONTEXTUAL} {contextual}\n{_PARAMETRIC} {parametric}"
    if target_format == "single":
        return f"{_CONTEXTUAL} {contextual}"
    raise ValueError(f"target_format must be one of {TARGET_FORMATS}, got {target_format!r}")


@dataclass(frozen=True)
class ParsedAnswer:
    contextual: str
    parametric: str | None


_PARAMETRIC_SPLIT = re.compile(r"\s*parametric\s*:\s*", re.IGNORECASE)
_CONTEXTUAL_PREFIX = re.compile(r"^\s*contextual\s*:\s*", re.IGNORECASE)


def parse_generation(text: str) -> ParsedAnswer:
    """Split a generation into its contextual and parametric answers (None if absent)."""
    parts = _PARAMETRIC_SPLIT.split(text, maxsplit=1)
    contextual = _CONTEXTUAL_PREFIX.sub("", parts[0]).strip()
    parametric = parts[1].strip() if len(parts) == 2 else None
    return ParsedAnswer(contextual=contextual, parametric=parametric)



def is_well_formed(text: str, target_format: str) -> bool:
    """The generation starts with the contextual marker and holds every answer `target_format`
    asks for, each non-empty: the sign that a method learned the output format at all."""
    if target_format not in TARGET_FORMATS:
        raise ValueError(f"target_format must be one of {TARGET_FORMATS}, got {target_format!r}")
    if not _CONTEXTUAL_PREFIX.match(text):
        return False
    parsed = parse_generation(text)
    return bool(parsed.contextual) and (target_format == "single" or bool(parsed.parametric))
