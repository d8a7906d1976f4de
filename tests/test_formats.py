"""DisentQA's input and target formats and parsing a generation back into its answers."""
from __future__ import annotations

import pytest

from cfqa.formats import UNANSWERABLE, ParsedAnswer, format_input, format_target, parse_generation


def test_format_input_has_one_question_mark_and_a_context_line():
    assert format_input("which country is lyon in", "Lyon is in France .") == \
        "question: which country is lyon in?\ncontext: Lyon is in France ."
    assert format_input("  which country is lyon in ? ", "  Lyon is in France . ") == \
        "question: which country is lyon in?\ncontext: Lyon is in France ."
    assert format_input("where?", "") == "question: where?\ncontext: "


def test_format_target_disentangled_and_single():
    assert format_target("Lyon", "Paris", "disentangled") == "contextual: Lyon\nparametric: Paris"
    assert format_target(UNANSWERABLE, "Paris", "disentangled") == "contextual: unanswerable\nparametric: Paris"
    assert format_target("Lyon", "Paris", "single") == "contextual: Lyon"
    with pytest.raises(ValueError, match="target_format must be one of .*got 'both'"):
        format_target("Lyon", "Paris", "both")


@pytest.mark.parametrize("generation, contextual, parametric", [
    ("contextual: Paris\nparametric: Lyon", "Paris", "Lyon"),
    # T5's tokenizer decodes the newline as a space.
    ("contextual: Paris parametric: Lyon", "Paris", "Lyon"),
    ("Contextual : South Africa  Parametric:North America ", "South Africa", "North America"),
    ("contextual: unanswerable parametric: 10", UNANSWERABLE, "10"),
    ("contextual: Paris", "Paris", None),               # single-answer format
    ("Paris", "Paris", None),                          # no marker at all
    ("contextual: Paris parametric:", "Paris", ""),    # parametric marker, nothing after it
    ("", "", None),
])
def test_parse_generation(generation, contextual, parametric):
    assert parse_generation(generation) == ParsedAnswer(contextual=contextual, parametric=parametric)


@pytest.mark.parametrize("contextual, parametric", [("Lyon", "Paris"), (UNANSWERABLE, "North America")])
def test_parse_inverts_format(contextual, parametric):
    target = format_target(contextual, parametric, "disentangled")
    for generation in (target, target.replace("\n", " ")):
        assert parse_generation(generation) == ParsedAnswer(contextual, parametric)
    assert parse_generation(format_target(contextual, parametric, "single")) == ParsedAnswer(contextual, None)
