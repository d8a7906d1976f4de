"""The NQ simplified record as prepare reads it: a typed schema, decoded by msgspec.

Only the fields prepare uses are declared; msgspec skips the others (long_answer_candidates,
document_url) without building Python objects for them. `document_text` stays raw JSON
(msgspec.Raw): most records are dropped before their document is needed, and the kept ones
read only the long answer's tokens (see cfqa.nq.tokens). Measured on synthetic NQ records:
typed msgspec 1285 MB/s vs orjson 699 MB/s vs json 376 MB/s.

Every way a line can be wrong ends in a RecordProblem with a reason (cfqa.nq.errors): msgspec
does not check the UTF-8 of strings it skips (or of the raw document_text), so a line that is
not pure ASCII is decoded once to check it (published NQ is ASCII; `isascii` costs ~7 us on an
84 KB record, ~2% of prepare's CPU time), and nesting deeper than the interpreter's recursion
limit surfaces as a RecursionError from msgspec. The fields prepare does not read are checked
for JSON syntax and UTF-8 only: declaring them too (candidates, url, ids) measured +10-30 us
per record, 5-10% of prepare.
"""
from __future__ import annotations

import re

import msgspec

from cfqa.nq.errors import (INVALID_JSON, INVALID_UTF8, INVALID_VALUE, MISSING_FIELD, TOO_DEEPLY_NESTED,
                            WRONG_TYPE, RecordProblem)
from cfqa.nq.json_location import deepest_nesting, field_at

NO_ANSWER = -1  # NQ marks a missing long answer with start_token = end_token = -1


class Span(msgspec.Struct, frozen=True, gc=False):
    start_token: int
    end_token: int

    @property
    def is_null(self) -> bool:
        return self.start_token == NO_ANSWER and self.end_token == NO_ANSWER


class Annotation(msgspec.Struct, frozen=True, gc=False):
    long_answer: Span
    short_answers: list[Span]
    yes_no_answer: str  # NQ always writes it: a record without it is damaged, not "NONE"


class SimplifiedRecord(msgspec.Struct, frozen=True, gc=False):
    example_id: int | str
    question_text: str
    document_text: msgspec.Raw
    annotations: list[Annotation]


_DECODER = msgspec.json.Decoder(SimplifiedRecord)
# msgspec reports where a value failed as "... - at `$.annotations[0].long_answer`".
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_EXPECTED = re.compile(r"^Expected `")


def decode_record(line: bytes) -> SimplifiedRecord:
    """One simplified record; a RecordProblem names the field that is missing or mistyped."""
    if not line.isascii():
        _check_utf8(line)
    try:
        record = _DECODER.decode(line)
    except msgspec.ValidationError as error:
        raise _problem(str(error)) from error
    except msgspec.DecodeError as error:
        raise RecordProblem(None, f"expected one JSON object per line: {error}", INVALID_JSON) from error
    except RecursionError:
        raise _too_deep(line) from None  # the chained traceback would be thousands of frames
    if memoryview(record.document_text)[:1] != b'"':
        raise RecordProblem("document_text", f"Expected `str`, got `{_json_kind(record.document_text)}`",
                            WRONG_TYPE)
    return record


def _check_utf8(line: bytes) -> None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecordProblem(field_at(line, error.start),
                            f"expected UTF-8 text, got byte 0x{line[error.start]:02x} at byte {error.start} "
                            f"of the line ({error.reason})", INVALID_UTF8) from None


def _too_deep(line: bytes) -> RecordProblem:
    depth, field = deepest_nesting(line)
    return RecordProblem(field, f"expected a few levels of nesting, got arrays/objects nested {depth} "
                                "deep (too deep to decode)", TOO_DEEPLY_NESTED)


def _json_kind(raw: msgspec.Raw) -> str:
    first = bytes(memoryview(raw)[:1])
    return {b"[": "array", b"{": "object", b"t": "bool", b"f": "bool", b"n": "null"}.get(first, "number")


def _problem(message: str) -> RecordProblem:
    match = _AT.match(message)
    text, path = match.group("message"), match.group("path") or ""
    missing = _MISSING.match(text)
    if missing:
        field = f"{path}.{missing.group('field')}" if path else missing.group("field")
        return RecordProblem(field, "required field is missing", MISSING_FIELD)
    return RecordProblem(path or None, text, WRONG_TYPE if _EXPECTED.match(text) else INVALID_VALUE)
