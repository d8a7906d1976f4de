"""The four context variants of one question, as rows of data/variants/ (DisentQA fields).

contextual_answer: what the context says (the substitute in a counterfactual context,
"unanswerable" when the context is empty or another question's); parametric_answer: the
original answer, whatever the context.
"""
from __future__ import annotations

from cfqa.counterfactual.examples import Example
from cfqa.counterfactual.substitution import replace_answers
from cfqa.formats import UNANSWERABLE


def variant_row(example: Example, variant: str, context: str, contextual_answer: str,
                substitute: str | None = None) -> dict:
    return {
        "id": example.id,
        "question": example.question,
        "context": context,
        "variant": variant,
        "contextual_answer": contextual_answer,
        "parametric_answer": example.answer,
        "answers": list(example.answers),
        "answer_type": example.group,
        "substitute": substitute,
    }


def factual_row(example: Example) -> dict:
    return variant_row(example, "factual", example.context, example.answer)


def counterfactual_row(example: Example, substitute: str) -> dict:
    """The context with every whole mention of a gold answer replaced by `substitute`; error
    if there is none."""
    context, replaced = replace_answers(example.context, example.answers, substitute)
    if replaced == 0:
        raise ValueError(f"example {example.id!r}: no gold answer occurs in the context as a whole "
                         f"mention, so it has no counterfactual")
    return variant_row(example, "counterfactual", context, substitute, substitute)


def empty_row(example: Example) -> dict:
    return variant_row(example, "empty", "", UNANSWERABLE)


def random_row(example: Example, donor: Example) -> dict:
    return variant_row(example, "random", donor.context, UNANSWERABLE)
