"""The NQ simplified record as prepare reads it: a typed schema, decoded by msgspec.

Only the fields prepare uses are declared; msgspec skips the others (long_answer_candidates,
document_url) without building Python objects for them. `document_text` stays raw JSON
(msgspec.Raw): most records are dropped before their document is needed, and the kept ones
read only the long answer's tokens (see cfqa.nq.tokens). Measured on synthetic NQ records:
typed msgspec 1285 MB/s vs orjson 699 MB/s vs json 376 MB/s.
"""
from __future__ import annotations

import re

import msgspec

from cfqa.nq.errors import RecordProblem

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
    yes_no_answer: str = "NONE"


class SimplifiedRecord(msgspec.Struct, frozen=True, gc=False):
    example_id: int | str
    question_text: str
    document_text: msgspec.Raw
    annotations: list[Annotation]


_DECODER = msgspec.json.Decoder(SimplifiedRecord)
# msgspec reports where a value failed as "... - at `$.annotations[0].long_answer`".
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def decode_record(line: bytes) -> SimplifiedRecord:
    """One simplified record; a RecordProblem names the field that is missing or mistyped."""
    try:
        return _DECODER.decode(line)
    except msgspec.ValidationError as error:
        raise _problem(str(error)) from error
    except msgspec.DecodeError as error:
        raise RecordProblem(None, f"expected one JSON object per line: {error}") from error


def _problem(message: str) -> RecordProblem:
    match = _AT.match(message)
    text, path = match.group("message"), match.group("path") or ""
    missing = _MISSING.match(text)
    if missing:
        field = f"{path}.{missing.group('field')}" if path else missing.group("field")
        return RecordProblem(field, "required field is missing")
    return RecordProblem(path or None, text)
