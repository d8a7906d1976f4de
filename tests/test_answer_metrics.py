"""SQuAD normalization, exact match, token F1, the lenient match and memorization classes,
against values worked out by hand."""
from __future__ import annotations

import pytest

from cfqa.scoring.answer_metrics import (best_f1, exact_match, lenient_match, memorization_class,
                                 memorization_ratio, normalize_answer, token_f1)


@pytest.mark.parametrize("text, normalized", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  a   cat,  an apple and THE dog. ", "cat apple and dog"),
    ("10,021,295", "10021295"),
    ("Theodore's hat", "theodores hat"),        # "the" inside a word is not an article
    ("anthem", "anthem"),
    ("U.S.A.", "usa"),
    ("The", ""),
    ("", ""),
])
def test_normalize_answer_squad_cases(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_after_normalization():
    assert exact_match("the United States", ["United States.", "USA"])
    assert exact_match("USA", ["United States", "U.S.A."])
    assert not exact_match("United States of America", ["United States"])
    assert not exact_match("Paris", [])


@pytest.mark.parametrize("prediction, gold, f1", [
    ("the cat sat on the mat", "a cat sat on mat", 1.0),
    ("new york city", "york", 0.5),             # P 1/3, R 1 -> 2 * 1/3 / (4/3)
    ("paris france", "paris", 2 / 3),           # P 1/2, R 1
    ("red red blue", "red green", 0.4),          # common 1 (red): P 1/3, R 1/2 -> 0.4
    ("lyon", "paris", 0.0),
    ("the", "a", 1.0),                           # both normalize to nothing
    ("", "paris", 0.0),
])
def test_token_f1_by_hand(prediction, gold, f1):
    assert token_f1(prediction, gold) == pytest.approx(f1)


def test_best_f1_takes_the_best_gold():
    assert best_f1("new york city", ["boston", "york", "new york"]) == pytest.approx(0.8)  # P 2/3, R 1
    assert best_f1("anything", []) == 0.0


@pytest.mark.parametrize("prediction, golds, expected", [
    ("18 January 1981", ["in 18 January 1981"], True),   # gold is a superset
    ("in 18 January 1981", ["18 January 1981"], True),   # prediction is a superset
    ("January 1981", ["18 January 1981"], True),
    ("18 January", ["January 1981"], False),             # overlap but neither contains the other
    ("par", ["Paris"], False),                           # whole tokens only
    ("Paris", ["Lyon", "the Paris"], True),
    ("", ["Paris"], False),
    ("the", ["a"], True),                                # both normalize to nothing: an exact match
    ("", ["The."], True),
    ("the", ["Paris"], False),                           # nothing is not contained in everything
])
def test_lenient_match(prediction, golds, expected):
    assert lenient_match(prediction, golds) is expected


# Pairs where normalization empties, merges or reorders tokens: where EM and containment
# could part ways.
TRICKY_PAIRS = [
    ("the", "a"), ("", ""), ("", "the"), ("...", "!?"), ("An", "the."), ("a", "A"),
    ("The Paris", "paris"), ("U.S.A.", "usa"), ("U.S.A.", "U S A"), ("10,021,295", "10021295"),
    ("  New   York ", "new york"), ("New York", "York New"), ("the the", "a"), ("Paris!", "paris."),
    ("Theodore", "odore"), ("an apple", "apple a"), ("18 January 1981", "in 18 January 1981"),
    ("Zürich", "zürich"), ("ÉCOLE", "école"), ("\tParis\n", "Paris"), ("par is", "paris"),
    ("unanswerable", "Unanswerable."), ("1", "1.0"), ("", "Paris"),
]


@pytest.mark.parametrize("prediction, gold", TRICKY_PAIRS + [(g, p) for p, g in TRICKY_PAIRS])
def test_lenient_match_is_a_superset_of_exact_match(prediction, gold):
    for golds in ([gold], ["Lyon", gold], [gold, "Lyon"]):
        assert lenient_match(prediction, golds) >= exact_match(prediction, golds)
    assert not lenient_match(prediction, [])


@pytest.mark.parametrize("prediction, expected", [
    ("Lyon", "substitute"),
    ("lyon.", "substitute"),
    ("Paris", "original"),
    ("the City of Light", "original"),
    ("Marseille", "other"),
    ("unanswerable", "other"),
])
def test_memorization_class(prediction, expected):
    assert memorization_class(prediction, ["Paris", "City of Light"], "Lyon") == expected


def test_memorization_ratio():
    assert memorization_ratio(3, 1) == 0.75
    assert memorization_ratio(0, 5) == 0.0
    assert memorization_ratio(0, 0) is None
