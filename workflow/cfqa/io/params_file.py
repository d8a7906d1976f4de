"""Reading one parameter file within limits: its size, its encoding, its nesting and what its
aliases expand to, each checked before the YAML is built.

PyYAML builds an alias as a second reference to one object, so loading a "billion laughs" file
is cheap; what is not is everything after it that walks the values (schema validation, merging,
printing a value in an error): 4.7 KB of nested aliases cost a validation 23 s, 3.6 GB and a
522 MB error line, and a little more exhausts memory in Snakemake. A file nested 100,000 levels
deep overflows the recursive composer. Neither is a setting anybody means, so both are refused
from the event stream, which PyYAML parses without recursion: nesting beyond MAX_DEPTH, and
aliases that would make the file's values, written out, more than MAX_VALUES nodes. No library
offers these limits for PyYAML (ruamel.yaml has none either), hence this module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20          # params.yaml is about 10 KB; a profile less
MAX_DEPTH = 32               # params.yaml nests 5 levels (methods.lst.train.mixture[0])
MAX_VALUES = 100_000         # scalars and collections once aliases are written out; params.yaml has ~400

_OPENS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class ParamsFileError(ValueError):
    """The file cannot be a parameter file; the message names the file and where."""


def _line(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "its start"


def decode(data: bytes, path: str | Path) -> str:
    """The file's text; not UTF-8 is an error naming the first bad byte's line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[:error.start]
        line, column = before.count(b"\n") + 1, error.start - (before.rfind(b"\n") + 1) + 1
        raise ParamsFileError(f"{path}: not UTF-8 text: byte 0x{data[error.start]:02x} at line {line}, "
                              f"column {column} ({error.reason}); save the file as UTF-8") from None


def check_structure(text: str, path: str | Path) -> None:
    """Nesting depth and alias expansion of `text`, from its YAML events (no object is built)."""
    sizes: dict[str, int] = {}        # anchor -> nodes its value holds, aliases written out
    open_nodes: list[list] = []       # [anchor, nodes so far] per open collection
    total = 0

    def count(nodes: int, event) -> None:
        nonlocal total
        total += nodes
        if total > MAX_VALUES:
            raise ParamsFileError(f"{path}: its aliases (*name) expand to more than {MAX_VALUES:,} values at "
                                  f"{_line(event.start_mark)}; write the values out instead of nesting aliases")

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, _OPENS):
            if len(open_nodes) >= MAX_DEPTH:
                raise ParamsFileError(f"{path}: nested more than {MAX_DEPTH} levels deep at "
                                      f"{_line(event.start_mark)}; parameters nest a few levels")
            count(1, event)
            open_nodes.append([event.anchor, 1])
        elif isinstance(event, _CLOSES):
            anchor, nodes = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = nodes
            if open_nodes:
                open_nodes[-1][1] += nodes
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            nodes = 1 if isinstance(event, yaml.ScalarEvent) else sizes.get(event.anchor, 1)
            if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                sizes[event.anchor] = 1
            count(nodes, event)
            if open_nodes:
                open_nodes[-1][1] += nodes


def load(data: bytes, path: str | Path) -> Any:
    """The YAML value of one parameter file's bytes, within the limits above; ParamsFileError
    for a file too large, not UTF-8, too deep, expanding too far, or not YAML."""
    if len(data) > MAX_BYTES:
        raise ParamsFileError(f"{path}: {len(data):,} bytes, more than the {MAX_BYTES:,} a parameter file may have")
    text = decode(data, path)
    try:
        check_structure(text, path)
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParamsFileError(f"{path}: not valid YAML: {error}") from error


def read(path: str | Path) -> Any:
    """`load` of the file at `path`, reading no more than MAX_BYTES + 1 bytes of it."""
    with open(path, "rb") as handle:
        return load(handle.read(MAX_BYTES + 1), path)
