"""Token spans over raw JSON document_text, and decoding simplified records."""
from __future__ import annotations

import json
import random

import orjson
import pytest

from cfqa.nq.errors import RecordProblem
from cfqa.nq.simplified import decode_record
from cfqa.nq.tokens import DocumentTokens

TEXT = ('<P> The "quoted" word , a back\\slash , caf\u00e9 , 74\u00a0km and Saint\u2003Petersburg , '
        'tab\there , emoji \U0001F600 , </P> <Td_colspan="2"> end')


def _raw(text: str, encoder=json.dumps) -> bytes:
    encoded = encoder(text)
    return encoded.encode() if isinstance(encoded, str) else encoded


@pytest.mark.parametrize("encoder", [json.dumps, lambda t: json.dumps(t, ensure_ascii=False), orjson.dumps],
                         ids=["ascii-escapes", "utf-8", "orjson"])
def test_every_span_matches_split_on_single_spaces(encoder):
    expected = TEXT.split(" ")
    raw = _raw(TEXT, encoder)
    rng = random.Random(0)
    spans = [(0, 1), (0, len(expected)), (len(expected) - 1, len(expected))]
    spans += [tuple(sorted(rng.sample(range(len(expected) + 1), 2))) for _ in range(200)]
    for start, end in spans:
        document = DocumentTokens(raw, needed_tokens=end)
        document.check_span(start, end, "span")
        assert document.tokens(start, end) == expected[start:end]


def test_unicode_spaces_stay_inside_their_token():
    document = DocumentTokens(_raw(TEXT), needed_tokens=20)
    tokens = document.tokens(0, 20)
    assert "74\u00a0km" in tokens and "Saint\u2003Petersburg" in tokens
    # split() would have cut both tokens in two and moved everything after them.
    assert len(TEXT.split()) > len(TEXT.split(" "))


def test_a_long_document_needs_only_a_prefix_scan_and_still_counts_the_end():
    words = [f"w{i}" for i in range(30_000)]
    raw = _raw(" ".join(words))
    early = DocumentTokens(raw, needed_tokens=12)
    assert early.tokens(10, 12) == ["w10", "w11"]
    last = DocumentTokens(raw, needed_tokens=30_000)
    last.check_span(29_999, 30_000, "span")
    assert last.tokens(29_998, 30_000) == ["w29998", "w29999"]
    with pytest.raises(RecordProblem, match=r"<= 30000 .*got \[29999, 30001\)"):
        DocumentTokens(raw, needed_tokens=30_001).check_span(29_999, 30_001, "annotations[0].long_answer")


def test_an_escaped_space_still_separates_tokens():
    # No common writer emits "\u0020", but JSON allows it: it is a separator like a literal space.
    raw = b'"alpha\\u0020beta gamma delta"'
    document = DocumentTokens(raw, needed_tokens=4)
    assert document.tokens(1, 3) == ["beta", "gamma"]


@pytest.mark.parametrize("start,end", [(-1, 2), (3, 3), (4, 2), (0, 8)])
def test_out_of_range_spans_name_the_field(start, end):
    document = DocumentTokens(_raw("a b c d e f g"), needed_tokens=max(end, 1))
    with pytest.raises(RecordProblem) as caught:
        document.check_span(start, end, "annotations[0].short_answers[0]")
    assert caught.value.field == "annotations[0].short_answers[0]"
    assert f"got [{start}, {end})" in str(caught.value)


def test_document_text_must_be_a_string():
    with pytest.raises(RecordProblem, match="document_text: expected a string"):
        DocumentTokens(b"123", needed_tokens=1)


def _record(**overrides) -> dict:
    record = {"example_id": 7, "question_text": "q", "document_text": "<P> a b </P>",
              "annotations": [{"yes_no_answer": "NONE", "long_answer": {"start_token": 0, "end_token": 4},
                               "short_answers": [{"start_token": 1, "end_token": 2}]}]}
    record.update(overrides)
    return record


def test_decode_record_reads_the_fields_prepare_needs_and_skips_the_rest():
    line = orjson.dumps({**_record(), "long_answer_candidates": [{"start_token": 0, "end_token": 4}],
                         "document_url": "u"})
    record = decode_record(line)
    assert record.example_id == 7 and record.question_text == "q"
    assert bytes(record.document_text) == b'"<P> a b </P>"'
    assert record.annotations[0].short_answers[0].end_token == 2


def test_decode_record_names_a_missing_nested_field():
    record = _record()
    del record["annotations"][0]["long_answer"]["end_token"]
    with pytest.raises(RecordProblem) as caught:
        decode_record(orjson.dumps(record))
    assert caught.value.field == "annotations[0].long_answer.end_token"
    assert "missing" in caught.value.expectation


def test_decode_record_names_a_mistyped_field_and_rejects_malformed_json():
    with pytest.raises(RecordProblem) as caught:
        decode_record(orjson.dumps(_record(question_text=5)))
    assert caught.value.field == "question_text" and "Expected `str`" in caught.value.expectation
    with pytest.raises(RecordProblem, match="expected one JSON object per line"):
        decode_record(b'{"example_id": 1, "question_text": ')
