"""NQ original-format records (the dev files) → the simplified schema.

The original format lists `document_tokens` ({token, start_byte, end_byte, html_token}) beside
the page's HTML; the simplified format joins the tokens with single spaces into
`document_text` and keeps spans as token indices. As in NQ's own simplification, a blank
inside a token (HTML table cell openers such as `<Td colspan="2">`) becomes "_", so
`document_text.split(" ")` gives back exactly the original tokens and every span stays valid.
HTML tokens are kept; byte offsets are dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import orjson

from cfqa.io.logs import get_logger
from cfqa.nq.errors import INVALID_JSON, MISSING_FIELD, WRONG_TYPE, BadRecordError, RecordProblem
from cfqa.nq.reader import gzip_lines
from cfqa.nq.writer import atomic_jsonl_gz

log = get_logger(__name__)


def simplified_token(token: str) -> str:
    return token.replace(" ", "_")


def _span(span: dict, field: str, *extra: str) -> dict:
    try:
        out = {"start_token": span["start_token"], "end_token": span["end_token"]}
        for key in extra:
            out[key] = span[key]
    except (KeyError, TypeError) as error:
        raise RecordProblem(field, f"expected an object with start_token, end_token{''.join(', ' + k for k in extra)}"
                            f" (missing {error})", MISSING_FIELD) from error
    return out


def _field(record: dict, key: str, field: str | None = None):
    try:
        return record[key]
    except (KeyError, TypeError) as error:
        raise RecordProblem(field or key, "required field is missing", MISSING_FIELD) from error


def _list(value, field: str) -> list:
    if not isinstance(value, list):
        raise RecordProblem(field, f"expected a list, got {type(value).__name__}", WRONG_TYPE)
    return value


def to_simplified(record: dict) -> dict:
    """One original-format NQ record in the simplified schema."""
    if not isinstance(record, dict):
        raise RecordProblem(None, "expected a JSON object", WRONG_TYPE)
    tokens = _list(_field(record, "document_tokens"), "document_tokens")
    try:
        text = " ".join(simplified_token(token["token"]) for token in tokens)
    except (KeyError, TypeError, AttributeError) as error:
        raise RecordProblem("document_tokens", "expected a list of objects with a string `token`",
                            WRONG_TYPE) from error
    annotations = []
    for index, annotation in enumerate(_list(_field(record, "annotations"), "annotations")):
        where = f"annotations[{index}]"
        short_answers = _list(_field(annotation, "short_answers", f"{where}.short_answers"), f"{where}.short_answers")
        annotations.append({
            "yes_no_answer": _field(annotation, "yes_no_answer", f"{where}.yes_no_answer"),
            "long_answer": _span(_field(annotation, "long_answer", f"{where}.long_answer"),
                                 f"{where}.long_answer", "candidate_index"),
            "short_answers": [_span(span, f"{where}.short_answers[{n}]") for n, span in enumerate(short_answers)],
            "annotation_id": _field(annotation, "annotation_id", f"{where}.annotation_id"),
        })
    return {
        "example_id": _field(record, "example_id"),
        "question_text": _field(record, "question_text"),
        "document_url": record.get("document_url", ""),
        "document_text": text,
        "long_answer_candidates": [_span(c, f"long_answer_candidates[{n}]", "top_level")
                                   for n, c in enumerate(_list(record.get("long_answer_candidates", []),
                                                               "long_answer_candidates"))],
        "annotations": annotations,
    }


def convert_files(sources: Iterable[Path], destination: Path) -> int:
    """Original-format gzip JSONL files → one simplified gzip JSONL file (written atomically)."""
    with atomic_jsonl_gz(destination) as writer:
        for source in sources:
            for line_number, line in gzip_lines(source, desc=f"convert {Path(source).name}"):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as error:
                    raise BadRecordError(source, line_number, None,
                                         f"expected one JSON object per line: {error}", INVALID_JSON) from error
                try:
                    writer.write(to_simplified(record))
                except RecordProblem as problem:
                    raise problem.at(source, line_number) from problem
            log.info("converted %s to the simplified format", source)
        count = writer.count
    log.info("wrote %d simplified records to %s", count, destination)
    return count
