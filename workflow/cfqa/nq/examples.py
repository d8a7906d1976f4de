"""DisentQA's example selection on one NQ simplified record.

Kept: a long answer and a non-empty short-answer span (yes/no-only answers are dropped).
context = the long answer's tokens without HTML tags; answer = the first short answer's text;
answers = every distinct gold short answer of the record (all annotations; NQ dev has five).
When several annotations qualify (NQ dev), the first one in file order gives context and answer.
"""
from __future__ import annotations

from dataclasses import dataclass

from cfqa.nq.simplified import Annotation, SimplifiedRecord, Span
from cfqa.nq.tokens import DocumentTokens

NO_LONG_ANSWER = "no_long_answer"
YES_NO_ANSWER = "yes_no_answer"
NO_SHORT_ANSWER = "no_short_answer"
TABLE_OR_LIST_CONTEXT = "table_or_list_context"
SHORT_ANSWER_OUTSIDE_LONG_ANSWER = "short_answer_outside_long_answer"
EMPTY_CONTEXT = "empty_context"
EMPTY_ANSWER = "empty_answer"
DROP_REASONS = (NO_LONG_ANSWER, YES_NO_ANSWER, NO_SHORT_ANSWER, TABLE_OR_LIST_CONTEXT,
                SHORT_ANSWER_OUTSIDE_LONG_ANSWER, EMPTY_CONTEXT, EMPTY_ANSWER)

# Long answers that start with one of these tags are tables or lists, not running text.
TABLE_AND_LIST_TAGS = frozenset({"table", "tr", "ul", "ol", "dl"})


def is_html_token(token: str) -> bool:
    # The simplified format has no is_html flag; NQ's HTML tokens are whole tags such as "<P>",
    # "</Td>" or "<Th_colspan="2">" (blanks inside a token become "_").
    return len(token) > 2 and token[0] == "<" and token[-1] == ">"


def tag_name(token: str) -> str | None:
    if not is_html_token(token):
        return None
    return token[1:-1].lstrip("/").split("_", 1)[0].lower()


def visible_text(tokens: list[str]) -> str:
    return " ".join(token for token in tokens if not is_html_token(token))


@dataclass(frozen=True)
class Outcome:
    """A kept row ({"id", "question", "context", "answer", "answers"}) or why the record was dropped."""

    row: dict | None = None
    drop_reason: str | None = None


def _has_long_answer(annotation: Annotation) -> bool:
    return not annotation.long_answer.is_null


def _no_answer_reason(annotations: list[Annotation]) -> str:
    if not any(_has_long_answer(a) for a in annotations):
        return NO_LONG_ANSWER
    if any(a.yes_no_answer != "NONE" for a in annotations if _has_long_answer(a)):
        return YES_NO_ANSWER
    return NO_SHORT_ANSWER


def _span_text(document: DocumentTokens, span: Span) -> str:
    return visible_text(document.tokens(span.start_token, span.end_token))


def extract_example(record: SimplifiedRecord, *, drop_table_and_list_contexts: bool) -> Outcome:
    """The QA row of one record, or its drop reason. Spans it reads are checked (RecordProblem)."""
    annotations = record.annotations
    candidates = [a for a in annotations if _has_long_answer(a) and a.short_answers]
    if not candidates:
        return Outcome(drop_reason=_no_answer_reason(annotations))

    spans = [(annotation.long_answer, f"annotations[{index}].long_answer")
             for index, annotation in enumerate(annotations) if _has_long_answer(annotation)]
    spans += [(span, f"annotations[{index}].short_answers[{short_index}]")
              for index, annotation in enumerate(annotations)
              for short_index, span in enumerate(annotation.short_answers)]
    document = DocumentTokens(record.document_text, needed_tokens=max(span.end_token for span, _ in spans))
    for span, field in spans:
        document.check_span(span.start_token, span.end_token, field)

    if drop_table_and_list_contexts:
        candidates = [a for a in candidates if tag_name(document.tokens(
            a.long_answer.start_token, a.long_answer.start_token + 1)[0]) not in TABLE_AND_LIST_TAGS]
        if not candidates:
            return Outcome(drop_reason=TABLE_OR_LIST_CONTEXT)

    chosen = candidates[0]
    long_span, short_span = chosen.long_answer, chosen.short_answers[0]
    if not (long_span.start_token <= short_span.start_token
            and short_span.end_token <= long_span.end_token):
        return Outcome(drop_reason=SHORT_ANSWER_OUTSIDE_LONG_ANSWER)
    context = _span_text(document, long_span)
    if not context:
        return Outcome(drop_reason=EMPTY_CONTEXT)
    answer = _span_text(document, short_span)
    if not answer:
        return Outcome(drop_reason=EMPTY_ANSWER)

    answers = [answer]
    for annotation in annotations:
        for span in annotation.short_answers:
            text = _span_text(document, span)
            if text and text not in answers:
                answers.append(text)
    return Outcome(row={"id": str(record.example_id), "question": record.question_text,
                        "context": context, "answer": answer, "answers": answers})
