"""Which field of one JSON line a byte offset, or the deepest nesting, falls in.

Used only to word errors, never on the hot path. msgspec names the field of a type error
itself, but not of invalid UTF-8 (found before decoding) nor of nesting deeper than the
interpreter's recursion limit, and no JSON library reports the field of a position in invalid
input. So a regular expression cuts the line into strings and structural characters, and a
stack follows object keys and array indices; it works on broken lines too.
"""
from __future__ import annotations

import re
from typing import Iterator

import numpy as np

# A string (possibly cut short by the end of the line) or one structural character.
_STRING = rb'"(?:[^"\\]|\\.)*"?'
_TOKENS = re.compile(_STRING + rb'|[\[\]{}:,]', re.DOTALL)
_STRINGS = re.compile(_STRING, re.DOTALL)
_SHOWN_PARTS = 6


def field_at(line: bytes, offset: int) -> str | None:
    """The path (`annotations[0].long_answer`) of the value holding byte `offset`, if any."""
    for match, stack in _walk(line):
        if match.end() > offset:
            return _path(stack)
    return None


def deepest_nesting(line: bytes) -> tuple[int, str | None]:
    """The deepest nesting of arrays and objects in `line`, and the field where it goes deep.

    Vectorized: a nesting thousands deep is thousands of tokens, too many to walk one by one.
    """
    outside_strings = _STRINGS.sub(lambda match: b"_" * len(match.group()), line)
    codes = np.frombuffer(outside_strings, dtype=np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    closes = (codes == ord("]")) | (codes == ord("}"))
    depth = np.cumsum(opens.astype(np.int64) - closes.astype(np.int64))
    deepest = int(depth.max()) if len(depth) else 0
    if deepest == 0:
        return 0, None
    # Only the first levels are shown: the field is the one where the nesting passes them.
    where = int(np.argmax(depth >= min(deepest, _SHOWN_PARTS + 2)))
    return deepest, field_at(line, where)


def _walk(line: bytes) -> Iterator[tuple[re.Match, list[list]]]:
    """Every token with the stack of open containers before it: [kind, key or index] frames."""
    stack: list[list] = []
    last_string = None
    for match in _TOKENS.finditer(line):
        first = match.group()[:1]
        yield match, stack
        if first == b'"':
            last_string = match
        elif first == b":":
            if stack and stack[-1][0] == "object" and last_string is not None:
                stack[-1][1] = _key(last_string.group())
        elif first == b",":
            if stack:
                frame = stack[-1]
                frame[1] = frame[1] + 1 if frame[0] == "array" else None
        elif first in (b"{", b"["):
            stack.append(["object", None] if first == b"{" else ["array", 0])
        elif stack:  # "}" or "]"
            stack.pop()


def _key(token: bytes) -> str:
    return token.strip(b'"').decode("utf-8", "replace")


def _path(stack: list[list]) -> str | None:
    parts = []
    for kind, value in stack[:_SHOWN_PARTS]:
        if kind == "array":
            parts.append(f"[{value}]")
        elif value is not None:
            parts.append(f".{value}" if parts else value)
        else:
            break
    if len(stack) > _SHOWN_PARTS:
        parts.append("...")
    return "".join(parts).lstrip(".") or None
