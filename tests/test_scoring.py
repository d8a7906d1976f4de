"""Scores of one method over hand-built prediction records: per-variant EM/F1/ROUGE, the
unanswerable rate, memorization shares and the most-frequent-answer baseline."""
from __future__ import annotations

import pytest

from cfqa.evaluation.scoring import (baseline_scores, gold_contextual, memorization, most_frequent_answers,
                                     prediction_record, score_records, score_set)
from cfqa.scoring.metrics import best_rouge
from cfqa.contract import Memorization, PredictionRow, TypeScores
from cfqa.formats import UNANSWERABLE


def variant_row(variant: str, answers=("Paris",), substitute=None, answer_type="LOCATION", row_id="q1") -> dict:
    contextual = {"factual": answers[0], "counterfactual": substitute}.get(variant, UNANSWERABLE)
    return {"id": row_id, "question": "what is the capital of france", "context": "...", "variant": variant,
            "contextual_answer": contextual, "parametric_answer": answers[0], "answers": list(answers),
            "answer_type": answer_type, "substitute": substitute}


def record(variant, contextual, parametric, gold_contextual, gold_parametric, substitute=None, answer_type="LOCATION",
           question="x"):
    return PredictionRow(id=question, set="test", variant=variant, answer_type=answer_type, prediction="",
                         contextual=contextual, parametric=parametric, gold_contextual=gold_contextual,
                         gold_parametric=gold_parametric, substitute=substitute)


def test_gold_contextual_per_variant():
    assert gold_contextual(variant_row("factual", answers=("Paris", "City of Paris"))) == ["Paris", "City of Paris"]
    assert gold_contextual(variant_row("counterfactual", substitute="Lyon")) == ["Lyon"]
    assert gold_contextual(variant_row("empty")) == [UNANSWERABLE]
    assert gold_contextual(variant_row("random")) == [UNANSWERABLE]


def test_prediction_record_parses_the_generation():
    row = variant_row("counterfactual", substitute="Lyon", row_id="q7")
    result = prediction_record(row, "seen", "contextual: Lyon parametric: Paris")
    assert result == PredictionRow(id="q7", set="seen", variant="counterfactual", answer_type="LOCATION",
                                   prediction="contextual: Lyon parametric: Paris", contextual="Lyon",
                                   parametric="Paris", gold_contextual=["Lyon"], gold_parametric=["Paris"],
                                   substitute="Lyon")


def test_score_records_by_hand():
    records = [
        record("factual", "Paris", "Paris", ["Paris"], ["Paris"]),               # EM, F1 1
        record("factual", "new york city", "boston", ["york"], ["new york"]),    # F1 0.5, lenient; p-F1 0
        record("factual", "unanswerable", None, ["Lyon"], ["Lyon"]),             # wrong, no parametric
        record("factual", "the Lyon", "Lyon", ["Lyon"], ["Lyon"]),               # EM after normalization
    ]
    scores = score_records(records, "disentangled")
    assert scores["n"] == 4
    assert scores["contextual_em_pct"] == pytest.approx(50.0)
    assert scores["contextual_f1_pct"] == pytest.approx(100 * (1 + 0.5 + 0 + 1) / 4)
    assert scores["contextual_lenient_pct"] == pytest.approx(75.0)
    assert scores["unanswerable_pct"] == pytest.approx(25.0)
    # A missing parametric answer counts as wrong; "boston" vs "new york" has F1 0.
    assert scores["parametric_em_pct"] == pytest.approx(50.0)
    assert scores["parametric_f1_pct"] == pytest.approx(50.0)


@pytest.mark.parametrize("prediction, golds, expected", [
    # tokens [the, lyon] vs [lyon]: unigrams P 1/2 R 1; no gold bigram; LCS 1
    ("the Lyon", ["Lyon"], (2 / 3, 0.0, 2 / 3)),
    # best gold "new york": unigrams P 2/3 R 1 (F 0.8); bigrams P 1/2 R 1; LCS 2 (the "york" gold: F1 0.5)
    ("new york city", ["york", "new york"], (0.8, 2 / 3, 0.8)),
    # punctuation and case are not tokens
    ("New York-City", ["new york city"], (1.0, 1.0, 1.0)),
    # unigrams P 3/4 R 1; bigrams {new york} of 3 and 2: P 1/3 R 1/2; LCS "new york": P 2/4 R 2/3
    ("city of new york", ["new york city"], (6 / 7, 0.4, 4 / 7)),
    ("", ["Lyon"], (0.0, 0.0, 0.0)),
    ("Lyon", [], (0.0, 0.0, 0.0)),
])
def test_rouge_f_measure_by_hand(prediction, golds, expected):
    scores = best_rouge(prediction, golds)
    assert (scores["rouge1"], scores["rouge2"], scores["rougeL"]) == pytest.approx(expected)


def test_rouge_in_percent_averaged_over_records():
    records = [
        record("factual", "new york city", None, ["york", "new york"], ["new york"]),
        record("factual", "city of new york", None, ["new york city"], ["new york city"]),
        record("empty", "unanswerable", None, [UNANSWERABLE], ["Lyon"]),
    ]
    scores = score_records(records, "single")
    assert scores["contextual_rouge1_pct"] == pytest.approx(100 * (0.8 + 6 / 7 + 1) / 3)
    assert scores["contextual_rouge2_pct"] == pytest.approx(100 * (2 / 3 + 0.4 + 0) / 3)   # one token: no bigram
    assert scores["contextual_rouge_l_pct"] == pytest.approx(100 * (0.8 + 4 / 7 + 1) / 3)
    empty = score_records([], "single")
    assert [empty[f"contextual_{kind}_pct"] for kind in ("rouge1", "rouge2", "rouge_l")] == [None] * 3


def test_score_records_without_parametric_answers():
    scores = score_records([record("empty", "unanswerable", None, [UNANSWERABLE], ["Paris"])], "disentangled")
    assert scores["contextual_em_pct"] == 100.0 and scores["unanswerable_pct"] == 100.0
    assert scores["parametric_em_pct"] is None and scores["parametric_f1_pct"] is None
    assert score_records([], "disentangled")["contextual_em_pct"] is None


def test_memorization_shares():
    records = [
        record("counterfactual", "Lyon", "Paris", ["Lyon"], ["Paris"], substitute="Lyon"),
        record("counterfactual", "Nice", "Paris", ["Nice"], ["Paris"], substitute="Nice"),
        record("counterfactual", "Paris", "Paris", ["Lyon"], ["Paris"], substitute="Lyon"),
        record("counterfactual", "Berlin", "Paris", ["Lyon"], ["Paris"], substitute="Lyon"),
        record("factual", "Paris", "Paris", ["Paris"], ["Paris"]),                 # not counted
        record("counterfactual", "Paris", "Paris", ["Paris"], ["Paris"], substitute=None),  # no substitute
    ]
    result = memorization(records)
    assert result.n == 4
    assert (result.substitute_pct, result.original_pct, result.other_pct) == (50.0, 25.0, 25.0)
    assert result.memorization_ratio_pct == pytest.approx(100 / 3)  # p_o / (p_o + p_s) = 1 / 3
    empty = memorization([records[4]])
    assert empty == Memorization(n=0, original_pct=None, substitute_pct=None, other_pct=None,
                                 memorization_ratio_pct=None, known_n=0, known_memorization_ratio_pct=None)


def test_memorization_ratio_on_the_questions_the_model_knew():
    # q1 and q2 were answered correctly on their factual context, q3 was not, q4 has none.
    records = [
        record("factual", "Paris", "Paris", ["Paris"], ["Paris"], question="q1"),
        record("factual", "Rome", "Rome", ["Rome"], ["Rome"], question="q2"),
        record("factual", "Oslo", "Oslo", ["Bern"], ["Bern"], question="q3"),
        record("counterfactual", "Paris", "Paris", ["Lyon"], ["Paris"], substitute="Lyon", question="q1"),  # original
        record("counterfactual", "Milan", "Rome", ["Milan"], ["Rome"], substitute="Milan", question="q2"),  # substitute
        record("counterfactual", "Bern", "Bern", ["Basel"], ["Bern"], substitute="Basel", question="q3"),   # original
        record("counterfactual", "Bern", "Bern", ["Basel"], ["Bern"], substitute="Basel", question="q4"),   # original
    ]
    result = memorization(records)
    assert result.memorization_ratio_pct == pytest.approx(75.0)          # 3 original, 1 substitute
    assert result.known_n == 2 and result.known_memorization_ratio_pct == pytest.approx(50.0)


def test_most_frequent_answers_and_baseline():
    training = [
        {"answers": ["Europe"], "answer_type": "LOCATION"},
        {"answers": ["the Europe"], "answer_type": "LOCATION"},
        {"answers": ["Europe."], "answer_type": "LOCATION"},
        {"answers": ["Asia"], "answer_type": "LOCATION"},
        {"answers": ["French"], "answer_type": "LANGUAGE"},
        {"answers": ["3"], "answer_type": "NUMERIC"},
        {"answers": ["3"], "answer_type": "NUMERIC"},
        {"answers": ["2"], "answer_type": None},
    ]
    frequent = most_frequent_answers(training)
    assert frequent == {"LOCATION": "europe", "LANGUAGE": "french", "NUMERIC": "3", "untyped": "2", "all": "europe"}

    records = [
        record("factual", "-", "-", ["Europe"], ["Europe"], answer_type="LOCATION"),
        record("factual", "-", "-", ["Asia"], ["Asia"], answer_type="LOCATION"),
        record("factual", "-", "-", ["3"], ["3"], answer_type="NUMERIC"),
        record("factual", "-", "-", ["4"], ["4"], answer_type="NUMERIC"),
        record("factual", "-", "-", ["Spanish"], ["Spanish"], answer_type="PERSON"),   # type unseen in training
        record("counterfactual", "-", "-", ["Europe"], ["Asia"], substitute="Europe"),  # factual only
    ]
    assert baseline_scores(records, frequent) == {
        "all": pytest.approx(100 / 5),       # "europe" is right once out of five factual rows
        "LOCATION": 50.0, "NUMERIC": 50.0,
        "PERSON": 0.0,                       # falls back to the overall answer
    }


def test_score_set_by_variant_and_type():
    records = [
        record("factual", "Europe", "Europe", ["Europe"], ["Europe"], answer_type="LOCATION"),
        record("factual", "3", "3", ["4"], ["4"], answer_type="NUMERIC"),
        record("empty", "unanswerable", "Europe", [UNANSWERABLE], ["Europe"], answer_type="LOCATION"),
    ]
    variants, by_type = score_set(records, "disentangled")
    assert set(variants) == {"factual", "empty"}
    assert variants["factual"]["contextual_em_pct"] == 50.0 and variants["empty"]["contextual_em_pct"] == 100.0
    assert by_type["factual"] == {"LOCATION": TypeScores(n=1, contextual_em_pct=100.0, parametric_em_pct=100.0),
                                  "NUMERIC": TypeScores(n=1, contextual_em_pct=0.0, parametric_em_pct=0.0)}
    assert by_type["empty"] == {"LOCATION": TypeScores(n=1, contextual_em_pct=100.0, parametric_em_pct=100.0)}


@pytest.mark.parametrize(("text", "disentangled", "single"), [
    ("contextual: Paris parametric: Paris", True, True),
    ("contextual: Paris\nparametric: Lyon", True, True),
    ("contextual: Paris", False, True),
    ("contextual: parametric: Paris", False, False),
    ("contextual: Paris parametric:", False, True),
    ("A A A A", False, False),
    ("", False, False),
])
def test_well_formed_generations(text, disentangled, single):
    from cfqa.formats import is_well_formed

    assert is_well_formed(text, "disentangled") is disentangled
    assert is_well_formed(text, "single") is single


def test_well_formed_share_in_scores():
    rows = [PredictionRow(id="x", set="test", variant="factual", answer_type="LOCATION", prediction=text,
                          contextual="", parametric=None, gold_contextual=["Paris"], gold_parametric=["Paris"],
                          substitute=None)
            for text in ("contextual: Paris parametric: Paris", "A A A", "contextual: x parametric: y", "")]
    assert score_records(rows, "disentangled")["well_formed_pct"] == 50.0
