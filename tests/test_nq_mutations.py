"""Reading NQ simplified files that are damaged: mutated records, damaged gzip, empty inputs.

The property test mutates the fixture records (tests/fixtures/nq/simplified_train.jsonl.gz)
in ways that each make a record bad by construction: invalid UTF-8, a byte flipped to a
control character or to a non-ASCII byte, deep nesting, a required field of the wrong type,
dropped or renamed, a line cut short. Every mutated record must end in the project's own
error (never a traceback from inside a decoder) naming file, line and (where one exists) the
field; under prepare.max_bad_records they are skipped and counted exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import logging
import re
import shutil
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cfqa import config
from cfqa.io.atomic_io import read_json
from cfqa.nq.errors import BadRecordError, DamagedGzipError, NoRecordsError, RecordProblem
from cfqa.nq.examples import extract_example
from cfqa.nq.manifest import write_manifest
from cfqa.nq.original_format import convert_files
from cfqa.nq.simplified import decode_record
from cfqa.stages import prepare

FIXTURES = Path(__file__).parent / "fixtures" / "nq"
RECORDS = gzip.decompress((FIXTURES / "simplified_train.jsonl.gz").read_bytes()).splitlines()
assert all(line.isascii() for line in RECORDS)  # as published: json.dumps escapes non-ASCII

INVALID_UTF8 = [b"\xff", b"\x80", b"\xc3(", b"\xe2\x28\xa1", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]
# Control characters are invalid anywhere in JSON, except the whitespace ones (tab, LF, CR).
CONTROL_BYTES = [b for b in range(0x20) if b not in (0x09, 0x0A, 0x0D)]
# Deeper than the interpreter's recursion limit (1000 by default; hypothesis raises it while a
# test runs), which is what bounds msgspec's nesting.
DEEP_LEVELS = st.integers(5_000, 12_000)
TOP_FIELDS = ["example_id", "question_text", "document_text", "annotations"]
WRONG_VALUES = {"int": [1.5, True, None, [1], {"a": 1}, "7"], "str": [7, 1.5, False, None, ["x"], {"x": 1}],
                "int|str": [1.5, True, None, [1], {"a": 1}], "list": ["x", 3, None, {"a": []}],
                "object": ["x", 3, None, [1, 2], True]}


@functools.cache
def _base_cfg() -> config.Config:
    return config.load([config.PROJECT_ROOT / "params.yaml"])


def _cfg(**prepare_overrides) -> config.Config:
    cfg = _base_cfg()
    values = dict(seed=0, validation_fraction=0.2, drop_table_and_list_contexts=False, max_bad_records=0)
    values.update(prepare_overrides)
    return dataclasses.replace(cfg, prepare=config.PrepareConfig(**values))


@pytest.fixture(scope="module")
def dev_file(tmp_path_factory) -> Path:
    dev = tmp_path_factory.mktemp("dev") / "dev.jsonl.gz"
    convert_files([FIXTURES / "original_dev_00.jsonl.gz", FIXTURES / "original_dev_01.jsonl.gz"], dev)
    return dev


def _raw_dir(directory: Path, train_bytes: bytes, dev_file: Path) -> Path:
    raw = directory / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    (raw / "train.jsonl.gz").write_bytes(train_bytes)
    shutil.copyfile(dev_file, raw / "dev.jsonl.gz")
    write_manifest(raw, "test")          # as download writes it: these files are damaged before it
    return raw


# --- mutations: each returns (line, the reasons it may be rejected for, the field it must name) ----

def _typed_paths(record: dict) -> list[tuple[tuple, str]]:
    """Every value prepare reads, with its type."""
    paths = [(("example_id",), "int|str"), (("question_text",), "str"), (("document_text",), "str"),
             (("annotations",), "list")]
    for i, annotation in enumerate(record["annotations"]):
        paths += [(("annotations", i), "object"), (("annotations", i, "long_answer"), "object"),
                  (("annotations", i, "short_answers"), "list"), (("annotations", i, "yes_no_answer"), "str")]
        spans = [("annotations", i, "long_answer")]
        spans += [("annotations", i, "short_answers", j) for j in range(len(annotation["short_answers"]))]
        paths += [((*span, key), "int") for span in spans for key in ("start_token", "end_token")]
        paths += [(span, "object") for span in spans[1:]]
    return paths


def _required_keys(record: dict) -> list[tuple]:
    return [path for path, _ in _typed_paths(record) if isinstance(path[-1], str)]


def _field_name(path: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def _parent(record: dict, path: tuple):
    node = record
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def mutated_line(draw) -> tuple[bytes, set[str], str | None]:
    line = draw(st.sampled_from(RECORDS))
    kind = draw(st.sampled_from(["utf8", "flip", "deep", "wrong_type", "dropped", "renamed", "truncated"]))
    if kind == "utf8":
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(st.sampled_from(INVALID_UTF8)) + line[at:], {"invalid_utf8"}, None
    if kind == "flip":
        at = draw(st.integers(0, len(line) - 1))
        if draw(st.booleans()):  # the high bit of an ASCII byte: never UTF-8 next to ASCII bytes
            return line[:at] + bytes([line[at] | 0x80]) + line[at + 1:], {"invalid_utf8"}, None
        return line[:at] + bytes([draw(st.sampled_from(CONTROL_BYTES))]) + line[at + 1:], {"invalid_json"}, None
    if kind == "truncated":  # a strict prefix of one JSON object is never a JSON value
        return line[:draw(st.integers(1, len(line) - 1))], {"invalid_json"}, None
    record = json.loads(line)
    if kind == "deep":
        field = draw(st.sampled_from(TOP_FIELDS + ["document_url", "long_answer_candidates", "extra"]))
        levels = draw(DEEP_LEVELS)
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a": ', b"}")]))
        deep = opener * levels + b"0" + closer * levels
        record[field] = "PLACEHOLDER"
        text = json.dumps(record).encode().replace(b'"PLACEHOLDER"', deep)
        return text, {"too_deeply_nested", "wrong_type"}, field
    if kind == "wrong_type":
        path, expected_type = draw(st.sampled_from(_typed_paths(record)))
        _parent(record, path)[path[-1]] = draw(st.sampled_from(WRONG_VALUES[expected_type]))
        return json.dumps(record).encode(), {"wrong_type"}, _field_name(path)
    path = draw(st.sampled_from(_required_keys(record)))
    parent = _parent(record, path)
    value = parent.pop(path[-1])
    if kind == "renamed":
        parent[path[-1] + draw(st.sampled_from(["_", "s", "X"]))] = value
    return json.dumps(record).encode(), {"missing_field"}, _field_name(path)


def _problem_of(line: bytes) -> RecordProblem | None:
    """What prepare finds wrong with one line; any other exception fails the test."""
    try:
        extract_example(decode_record(line), drop_table_and_list_contexts=False)
    except RecordProblem as problem:
        return problem
    return None


# 25 examples of at least 42 mutated records: over 1,000, with fixture records between them.
entries = st.lists(st.tuples(st.booleans(), mutated_line()), min_size=42, max_size=50).map(
    lambda pairs: [entry for good_first, mutated in pairs
                   for entry in ([(RECORDS[len(mutated[0]) % len(RECORDS)], None, None)] if good_first else [])
                   + [mutated]])


_EXAMPLE_ID = re.compile(rb'"example_id": \d+(?=[,}])')


# No shrinking: a failing example is printed whole, and shrinking 50 records takes minutes.
@settings(max_examples=25, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(lines=entries)
def test_every_mutated_record_is_named_and_counted(tmp_path, dev_file, caplog, lines):
    lines = [(RECORDS[0], None, None)] + lines  # one good record: a file of bad ones is another error
    # Each record its own example id: the fixture records repeat, and a repeated id is a bad
    # record of its own (duplicate_id), tested in test_nq_prepare.py.
    lines = [(_EXAMPLE_ID.sub(b'"example_id": %d' % (1_000_000 + number), line, count=1), allowed, field)
             for number, (line, allowed, field) in enumerate(lines)]
    bad_lines, reasons = [], Counter()
    for number, (line, allowed, field) in enumerate(lines, start=1):
        assert b"\n" not in line
        problem = _problem_of(line)
        if allowed is None:
            assert problem is None, f"line {number} is a fixture record: {problem}"
            continue
        assert problem is not None, f"mutated line {number} was accepted: {line[:200]!r}"
        assert problem.reason in allowed, f"line {number}: {problem.reason} ({problem})"
        if field is not None:
            assert problem.field is not None and problem.field.startswith(field), (field, str(problem))
        bad_lines.append((number, problem))
        reasons[problem.reason] += 1
    train = gzip.compress(b"\n".join(line for line, _, _ in lines) + b"\n", mtime=0)
    raw = _raw_dir(tmp_path, train, dev_file)

    # Tolerated: every bad record skipped, counted by reason, the first ones listed with their line.
    out = tmp_path / "prepared"
    if out.exists():
        shutil.rmtree(out)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cfqa.stages.prepare"):
        prepare.run(_cfg(max_bad_records=len(bad_lines)), raw, out)
    skipped = [record.getMessage() for record in caplog.records if "skipping bad record" in record.getMessage()]
    assert [message.split(": ", 1)[1].split(": ", 1)[0] for message in skipped] == \
        [f"{raw / 'train.jsonl.gz'}:{number}" for number, _ in bad_lines]  # each one named, file and line
    stats = read_json(out / "stats.json")
    bad = stats["bad_records"]
    assert bad["count"] == len(bad_lines) and bad["by_file"] == {"train.jsonl.gz": len(bad_lines)}
    assert bad["by_reason"] == dict(reasons)
    assert [(entry["line"], entry["field"], entry["reason"]) for entry in bad["first"]] == \
        [(number, problem.field, problem.reason) for number, problem in bad_lines[:len(bad["first"])]]
    assert all(entry["file"] == str(raw / "train.jsonl.gz") for entry in bad["first"])
    good = len(lines) - len(bad_lines)
    assert stats["splits"]["train"]["records"] + stats["splits"]["validation"]["records"] == good

    # Strict: the first bad record stops the run, naming file, line and field.
    with pytest.raises(BadRecordError) as caught:
        prepare.run(_cfg(max_bad_records=0), raw, tmp_path / "strict")
    number, problem = bad_lines[0]
    assert type(caught.value) is BadRecordError
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(raw / "train.jsonl.gz"), number,
                                                                           problem.field)
    assert str(caught.value).startswith(f"{raw / 'train.jsonl.gz'}:{number}: ")

    # One over the limit: the last bad record is the one named.
    with pytest.raises(BadRecordError, match=r"over prepare\.max_bad_records") as caught:
        prepare.run(_cfg(max_bad_records=len(bad_lines) - 1), raw, tmp_path / "over")
    assert caught.value.line == bad_lines[-1][0]
    assert not (tmp_path / "strict").exists() and not (tmp_path / "over").exists()


# --- damaged gzip streams ---------------------------------------------------------------------

def _many_records(count: int = 400) -> bytes:
    """Distinct records (ids and questions differ) so the deflate stream is not one long repeat."""
    out = []
    for i in range(count):
        record = json.loads(RECORDS[i % len(RECORDS)])
        record["example_id"] = 50_000 + i * 7919
        record["question_text"] = f"{record['question_text']} {i * 104729 % 9973}"
        out.append(json.dumps(record).encode())
    return b"\n".join(out) + b"\n"


def _newlines_before_zlib_fails(data: bytes) -> int:
    """Lines inflated before zlib rejects `data`, fed one byte at a time (output is never lost)."""
    inflater, newlines = zlib.decompressobj(wbits=31), 0
    for index in range(len(data)):
        try:
            newlines += inflater.decompress(data[index:index + 1]).count(b"\n")
        except zlib.error:
            return newlines
    raise AssertionError("zlib accepted the damaged stream")


def _flip_inside(data: bytes, start: int) -> tuple[bytes, int]:
    """A bit flip at or after `start` that zlib finds before the last line (not only by the CRC)."""
    lines = zlib.decompress(data, wbits=31).count(b"\n")
    for position in range(start, len(data) - 8):
        damaged = bytearray(data)
        damaged[position] ^= 0x04
        line = _newlines_before_zlib_fails(bytes(damaged)) + 1
        if line < lines:
            return bytes(damaged), line
    raise AssertionError("no bit flip after byte {start} breaks the deflate data")


@pytest.mark.parametrize("max_bad_records", [0, 1_000])
@pytest.mark.parametrize("where", [0.3, 0.6])
def test_a_bit_flip_names_the_file_and_the_line_the_stream_breaks_at(tmp_path, dev_file, where, max_bad_records):
    data = gzip.compress(_many_records(), mtime=0)
    damaged, expected = _flip_inside(data, int(len(data) * where))
    assert expected > 1
    raw = _raw_dir(tmp_path, damaged, dev_file)
    with pytest.raises(DamagedGzipError) as caught:
        prepare.run(_cfg(max_bad_records=max_bad_records), raw, tmp_path / "prepared")
    assert (caught.value.path, caught.value.line) == (str(raw / "train.jsonl.gz"), expected)
    assert str(caught.value).startswith(f"{raw / 'train.jsonl.gz'}:{expected}: not a valid gzip stream")
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("kept", [0.25, 0.5, 0.9])
def test_a_truncated_gzip_names_the_file_and_the_line_it_ends_in(tmp_path, dev_file, kept):
    text = _many_records()
    data = gzip.compress(text, mtime=0)
    cut = data[:int(len(data) * kept)]
    expected = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n") + 1
    assert expected > 1
    raw = _raw_dir(tmp_path, cut, dev_file)
    with pytest.raises(DamagedGzipError, match="ends early") as caught:
        prepare.run(_cfg(max_bad_records=1_000), raw, tmp_path / "prepared")
    assert (caught.value.path, caught.value.line) == (str(raw / "train.jsonl.gz"), expected)


def test_a_bit_flip_in_the_gzip_header_names_line_one(tmp_path, dev_file):
    data = bytearray(gzip.compress(_many_records(), mtime=0))
    data[3] ^= 0x04  # FLG: announces a file name that is not there
    raw = _raw_dir(tmp_path, bytes(data), dev_file)
    with pytest.raises(DamagedGzipError) as caught:
        prepare.run(_cfg(), raw, tmp_path / "prepared")
    assert (caught.value.path, caught.value.line) == (str(raw / "train.jsonl.gz"), 1)


# --- inputs with no records -------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", gzip.compress(b"", mtime=0), gzip.compress(b"\n  \n\n", mtime=0)],
                         ids=["zero-bytes", "empty-gzip", "blank-lines"])
@pytest.mark.parametrize("which", ["train.jsonl.gz", "dev.jsonl.gz"])
def test_an_input_with_no_records_is_an_error_naming_it(tmp_path, dev_file, content, which):
    raw = _raw_dir(tmp_path, gzip.compress(b"\n".join(RECORDS), mtime=0), dev_file)
    (raw / which).write_bytes(content)
    write_manifest(raw, "test")
    with pytest.raises(NoRecordsError, match=r"expected one JSON record per line, found none") as caught:
        prepare.run(_cfg(max_bad_records=10), raw, tmp_path / "prepared")
    assert caught.value.path == str(raw / which) and caught.value.line is None
    assert not (tmp_path / "prepared").exists()


def test_a_file_whose_records_are_all_bad_is_an_error_naming_it(tmp_path, dev_file):
    broken = [line[:-1] for line in RECORDS]  # every record cut short
    raw = _raw_dir(tmp_path, gzip.compress(b"\n".join(broken), mtime=0), dev_file)
    with pytest.raises(NoRecordsError, match=rf"all {len(RECORDS)} records are bad") as caught:
        prepare.run(_cfg(max_bad_records=100), raw, tmp_path / "prepared")
    assert caught.value.path == str(raw / "train.jsonl.gz")


# --- the two record faults that used to escape as bare Python errors -------------------------

@pytest.mark.parametrize("line,field,reason", [
    (RECORDS[0].replace(b'"question_text": "', b'"question_text": "\xff'), "question_text", "invalid_utf8"),
    (RECORDS[0].replace(b'"document_url": ', b'"document_url": ' + b"[" * 5000 + b"]" * 5000 + b', "x": '),
     "document_url", "too_deeply_nested"),
])
def test_invalid_utf8_and_deep_nesting_are_bad_records(tmp_path, dev_file, line, field, reason):
    raw = _raw_dir(tmp_path, gzip.compress(RECORDS[1] + b"\n" + line + b"\n", mtime=0), dev_file)
    with pytest.raises(BadRecordError) as caught:
        prepare.run(_cfg(), raw, tmp_path / "strict")
    assert (caught.value.line, caught.value.reason) == (2, reason)
    assert caught.value.field.startswith(field)
    prepare.run(_cfg(max_bad_records=1), raw, tmp_path / "tolerant")
    assert read_json(tmp_path / "tolerant" / "stats.json")["bad_records"]["by_reason"] == {reason: 1}
