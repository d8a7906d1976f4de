"""Token access by [start, end) index over a document_text still in its JSON encoding.

NQ spans index `document_text.split(" ")` — single spaces only; `split()` would also split on
unicode spaces inside tokens (NQ has "\u00a0" inside tokens) and shift every span. A kept
record needs only the tokens up to its last answer span, so instead of decoding the ~75 KB
string and splitting it into ~12k Python strings (the slowest step of a naive reader: 90 MB/s
measured), the space positions are found with a vectorized NumPy pass over the raw JSON
bytes of the prefix that holds the spans, and only the wanted slices are decoded.

This is sound because a JSON string encodes a space (0x20) either literally or as the escape
"\\u0020", and no other escape or UTF-8 sequence contains the byte 0x20. A prefix that holds
the escape is re-encoded with literal spaces first (no common JSON writer emits it).
"""
from __future__ import annotations

import msgspec
import numpy as np
import orjson

from cfqa.nq.errors import INVALID_JSON, WRONG_TYPE, RecordProblem

_SPACE = 0x20
_QUOTE = 0x22
_ESCAPED_SPACE = b"\\u0020"
# First guess of how many JSON bytes hold N tokens (NQ averages ~6); the scan doubles if short.
_BYTES_PER_TOKEN_GUESS = 8
_SCAN_SLACK_BYTES = 4096


class DocumentTokens:
    """The first `needed_tokens` tokens of one document_text, from its raw JSON string."""

    __slots__ = ("_json", "_separators", "_whole", "_needed")

    def __init__(self, raw_json_string: bytes | msgspec.Raw, needed_tokens: int):
        view = memoryview(raw_json_string)
        if len(view) < 2 or view[0] != _QUOTE or view[-1] != _QUOTE:
            raise RecordProblem("document_text", "expected a string", WRONG_TYPE)
        self._needed = needed_tokens
        limit = min(len(view), max(needed_tokens, 1) * _BYTES_PER_TOKEN_GUESS + _SCAN_SLACK_BYTES)
        while True:
            prefix = bytes(view[:limit])
            if _ESCAPED_SPACE in prefix:
                prefix, limit = _encode_json_string(_decode_json_string(bytes(view))), len(view)
                view = memoryview(prefix)
            separators = _Separators(prefix)
            if separators.count >= needed_tokens or limit == len(view):
                break
            limit = min(len(view), 2 * limit)
        self._json, self._separators, self._whole = prefix, separators, limit == len(view)

    def check_span(self, start: int, end: int, field: str) -> None:
        """A span must satisfy 0 <= start < end <= the document's token count."""
        if end > self._needed:
            raise ValueError(f"span end {end} is past the {self._needed} tokens this view was built for")
        spaces = self._separators.count
        if not (0 <= start < end and (end <= spaces or (self._whole and end == spaces + 1))):
            count = f"{spaces + 1}" if self._whole else f"at least {spaces + 1}"
            raise RecordProblem(field, f"expected a token span with 0 <= start_token < end_token <= "
                                       f"{count} (the document's token count), got [{start}, {end})")

    def tokens(self, start: int, end: int) -> list[str]:
        """`document_text.split(" ")[start:end]` for a span that passed check_span."""
        separators = self._separators
        first = separators.position(start - 1) + 1 if start > 0 else 1  # 0 is the opening quote
        stop = separators.position(end - 1) if end <= separators.count else len(self._json) - 1
        return _decode_json_string(b'"' + self._json[first:stop] + b'"').split(" ")


class _Separators:
    """Byte positions of the spaces in a buffer, found on demand.

    Listing every position (np.flatnonzero) costs ~2x more than what this needs: a bitmap of
    the spaces, a running count per 64-byte word (np.bitwise_count), then a binary search and
    a few bytes.find calls inside one word per wanted position.
    """

    __slots__ = ("_data", "_cumulative", "count")

    def __init__(self, data: bytes):
        bits = np.packbits(np.frombuffer(data, dtype=np.uint8) == _SPACE, bitorder="little")
        words = np.concatenate((bits, np.zeros(-len(bits) % 8, dtype=np.uint8))).view(np.uint64)
        self._data = data
        self._cumulative = np.cumsum(np.bitwise_count(words), dtype=np.int64)
        self.count = int(self._cumulative[-1]) if len(self._cumulative) else 0

    def position(self, index: int) -> int:
        """The byte offset of the space number `index` (from 0); index < count."""
        word = int(np.searchsorted(self._cumulative, index + 1))
        before = int(self._cumulative[word - 1]) if word else 0
        position = 64 * word - 1
        for _ in range(index - before + 1):
            position = self._data.find(b" ", position + 1)
        return position


def _decode_json_string(encoded: bytes) -> str:
    try:
        return msgspec.json.decode(encoded, type=str)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
        raise RecordProblem("document_text", f"expected a valid JSON string: {error}", INVALID_JSON) from error


def _encode_json_string(text: str) -> bytes:
    try:
        return orjson.dumps(text)
    except orjson.JSONEncodeError as error:  # a lone surrogate cannot be written back as UTF-8
        raise RecordProblem("document_text", f"expected a valid JSON string: {error}", INVALID_JSON) from error
