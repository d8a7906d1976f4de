"""The prepare stage on hand-made NQ records (tests/fixtures/nq, see make_fixtures.py)."""
from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path

import orjson
import pytest

from cfqa import config
from cfqa.io.atomic_io import read_json, read_jsonl
from cfqa.nq.errors import BadRecordError, ManifestMismatch
from cfqa.nq.manifest import MANIFEST, write_manifest
from cfqa.nq.original_format import convert_files
from cfqa.nq.writer import atomic_jsonl_gz
from cfqa.stages import prepare

FIXTURES = Path(__file__).parent / "fixtures" / "nq"

TRAIN_ROWS = {
    "101": ("It was designed by the company of Gustave Eiffel and completed in 1889 .", "Gustave Eiffel",
            ["Gustave Eiffel"]),
    "102": ("The river flows 74\u00a0km through Saint\u2003Petersburg into the Gulf of Finland .",
            "the Gulf of Finland", ["the Gulf of Finland"]),
    "103": ("Capital Canberra Largest city Sydney", "Canberra", ["Canberra"]),
    "104": ('The "Lennon-McCartney" songs , filed under C:\\Beatles , caf\u00e9 credits , were written by '
            "John Lennon and Paul McCartney .", "John Lennon", ["John Lennon", "Paul McCartney"]),
    "108": ("Mercury is the closest planet Venus is the hottest planet", "Venus", ["Venus"]),
}
TEST_ROWS = {
    "9001": ("The tower was completed on 31 March 1889 for the World 's Fair .", "1889",
             ["1889", "31 March 1889"]),
    "9002": ("Population 8\u00a0million New_York City", "8\u00a0million", ["8\u00a0million"]),
}


def _cfg(**prepare_overrides) -> config.Config:
    cfg = config.load([config.PROJECT_ROOT / "params.yaml"])
    values = dict(seed=0, validation_fraction=0.2, drop_table_and_list_contexts=False, max_bad_records=0)
    values.update(prepare_overrides)
    return dataclasses.replace(cfg, prepare=config.PrepareConfig(**values))


def _raw_dir(tmp_path: Path, train: str | Path = "simplified_train.jsonl.gz") -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copyfile(FIXTURES / train, raw / "train.jsonl.gz")
    convert_files([FIXTURES / "original_dev_00.jsonl.gz", FIXTURES / "original_dev_01.jsonl.gz"],
                  raw / "dev.jsonl.gz")
    write_manifest(raw, "test")
    return raw


def _rows(out: Path, *splits: str) -> dict[str, tuple]:
    return {row["id"]: (row["context"], row["answer"], row["answers"])
            for split in splits for row in read_jsonl(out / f"{split}.jsonl")}


def test_keeps_long_and_short_answers_with_clean_context_and_all_gold_answers(tmp_path):
    out = tmp_path / "prepared"
    prepare.run(_cfg(), _raw_dir(tmp_path), out)
    assert _rows(out, "train", "validation") == TRAIN_ROWS
    assert _rows(out, "test") == TEST_ROWS
    first = next(read_jsonl(out / "test.jsonl"))
    assert set(first) == {"id", "question", "context", "answer", "answers"}
    assert first["question"] == "when was the eiffel tower completed"


def test_stats_count_kept_and_dropped_by_reason(tmp_path):
    out = tmp_path / "prepared"
    prepare.run(_cfg(), _raw_dir(tmp_path), out)
    stats = read_json(out / "stats.json")
    splits = stats["splits"]
    assert splits["train"]["kept"] + splits["validation"]["kept"] == 5
    assert splits["train"]["records"] + splits["validation"]["records"] == 9
    dropped = {reason: splits["train"]["dropped"][reason] + splits["validation"]["dropped"][reason]
               for reason in splits["train"]["dropped"]}
    assert {k: v for k, v in dropped.items() if v} == {
        "yes_no_answer": 1, "no_long_answer": 1, "no_short_answer": 1, "empty_answer": 1}
    assert splits["test"]["kept"] == 2 and splits["test"]["records"] == 4
    assert {k: v for k, v in splits["test"]["dropped"].items() if v} == {"no_long_answer": 1, "yes_no_answer": 1}
    assert stats["bad_records"]["count"] == 0


def test_drop_table_and_list_contexts(tmp_path):
    out = tmp_path / "prepared"
    prepare.run(_cfg(drop_table_and_list_contexts=True), _raw_dir(tmp_path), out)
    assert set(_rows(out, "train", "validation")) == {"101", "102", "104"}
    assert set(_rows(out, "test")) == {"9001"}
    stats = read_json(out / "stats.json")["splits"]
    assert stats["test"]["dropped"]["table_or_list_context"] == 1
    assert sum(stats[split]["dropped"]["table_or_list_context"] for split in ("train", "validation")) == 2


@pytest.mark.parametrize("fixture,message", [
    ("bad_malformed_line.jsonl.gz", r"train\.jsonl\.gz:2: expected one JSON object per line"),
    ("bad_missing_field.jsonl.gz",
     r"train\.jsonl\.gz:2: annotations\[0\]\.long_answer\.end_token: required field is missing"),
    ("bad_span_out_of_range.jsonl.gz",
     r"train\.jsonl\.gz:3: annotations\[0\]\.short_answers\[0\]: expected a token span .* got \[\d+, 999\)"),
    ("bad_truncated.jsonl.gz", r"train\.jsonl\.gz:\d+: the gzip stream ends early"),
])
def test_bad_input_is_an_error_naming_file_line_and_field_and_writes_nothing(tmp_path, fixture, message):
    out = tmp_path / "prepared"
    with pytest.raises(BadRecordError, match=message):
        prepare.run(_cfg(), _raw_dir(tmp_path, fixture), out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temporary left behind


def test_bad_records_within_the_limit_are_skipped_and_counted(tmp_path):
    out = tmp_path / "prepared"
    prepare.run(_cfg(max_bad_records=1), _raw_dir(tmp_path, "bad_malformed_line.jsonl.gz"), out)
    assert set(_rows(out, "train", "validation")) == {"101", "102"}
    bad = read_json(out / "stats.json")["bad_records"]
    assert bad["count"] == 1 and bad["by_file"] == {"train.jsonl.gz": 1}
    assert bad["by_reason"] == {"invalid_json": 1}
    assert bad["first"][0]["line"] == 2 and bad["first"][0]["file"].endswith("train.jsonl.gz")


def test_more_bad_records_than_the_limit_is_an_error(tmp_path):
    # Two gzip members in one file are one valid gzip stream: line 2 is not JSON, line 4 repeats
    # the id of line 1 (the second member starts with the same record), line 5 lacks a field.
    combined = tmp_path / "two_bad.jsonl.gz"
    combined.write_bytes((FIXTURES / "bad_malformed_line.jsonl.gz").read_bytes()
                         + (FIXTURES / "bad_missing_field.jsonl.gz").read_bytes())
    with pytest.raises(BadRecordError, match=r"train\.jsonl\.gz:5: .*over prepare\.max_bad_records = 2"):
        prepare.run(_cfg(max_bad_records=2), _raw_dir(tmp_path, combined), tmp_path / "prepared")


def test_an_uncompressed_file_is_not_taken_for_gzip(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(gzip.decompress((FIXTURES / "simplified_train.jsonl.gz").read_bytes()))
    with pytest.raises(BadRecordError, match=r"train\.jsonl\.gz:1: not a valid gzip stream"):
        prepare.run(_cfg(), _raw_dir(tmp_path, plain), tmp_path / "prepared")


def test_a_truncated_file_is_an_error_whatever_the_limit(tmp_path):
    with pytest.raises(BadRecordError, match="ends early"):
        prepare.run(_cfg(max_bad_records=100), _raw_dir(tmp_path, "bad_truncated.jsonl.gz"), tmp_path / "prepared")


def _synthetic_raw(tmp_path: Path, records: int = 300) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, first_id in (("train.jsonl.gz", 10_000), ("dev.jsonl.gz", 20_000)):
        with atomic_jsonl_gz(raw / name) as writer:
            for i in range(records):
                writer.write({"example_id": first_id + i, "question_text": f"question {i}",
                              "document_text": f"Title <P> fact number {i} is here </P>",
                              "annotations": [{"yes_no_answer": "NONE",
                                               "long_answer": {"start_token": 1, "end_token": 8},
                                               "short_answers": [{"start_token": 4, "end_token": 5}]}]})
    write_manifest(raw, "test")
    return raw


def test_same_seed_gives_identical_bytes_and_another_seed_another_split(tmp_path):
    raw = _synthetic_raw(tmp_path)
    runs = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        prepare.run(_cfg(seed=seed), raw, tmp_path / name)
        runs[name] = {split: (tmp_path / name / f"{split}.jsonl").read_bytes() for split in prepare.SPLITS}
    assert runs["a"] == runs["b"]
    validation_a = {row["id"] for row in read_jsonl(tmp_path / "a" / "validation.jsonl")}
    validation_c = {row["id"] for row in read_jsonl(tmp_path / "c" / "validation.jsonl")}
    assert validation_a != validation_c
    assert 30 <= len(validation_a) <= 90 and 30 <= len(validation_c) <= 90  # ~20% of 300
    train_a = {row["id"] for row in read_jsonl(tmp_path / "a" / "train.jsonl")}
    assert not train_a & validation_a and len(train_a | validation_a) == 300
    assert runs["a"]["test"] == runs["c"]["test"]  # the test split does not depend on the seed


def test_the_split_is_a_function_of_seed_and_id_not_of_file_order(tmp_path):
    raw = _synthetic_raw(tmp_path, records=100)
    prepare.run(_cfg(), raw, tmp_path / "forward")
    lines = gzip.decompress((raw / "train.jsonl.gz").read_bytes()).splitlines(keepends=True)
    (raw / "train.jsonl.gz").write_bytes(gzip.compress(b"".join(reversed(lines))))
    write_manifest(raw, "test")
    prepare.run(_cfg(), raw, tmp_path / "reversed")
    forward = {row["id"] for row in read_jsonl(tmp_path / "forward" / "validation.jsonl")}
    backward = {row["id"] for row in read_jsonl(tmp_path / "reversed" / "validation.jsonl")}
    assert forward == backward and forward


def test_missing_raw_file_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(FileNotFoundError, match=r"train\.jsonl\.gz: raw NQ file not found"):
        prepare.run(_cfg(), raw, tmp_path / "prepared")


def test_rows_are_valid_json_lines(tmp_path):
    out = tmp_path / "prepared"
    prepare.run(_cfg(), _raw_dir(tmp_path), out)
    for split in prepare.SPLITS:
        for line in (out / f"{split}.jsonl").read_bytes().splitlines():
            row = orjson.loads(line)
            assert row["answer"] == row["answers"][0] and row["answer"] in row["context"]


# ---- integrity end to end: the manifest's size and sha256, duplicate example ids ------------

def _member(records: list[dict]) -> bytes:
    return gzip.compress(b"".join(orjson.dumps(record) + b"\n" for record in records), mtime=0)


def _record(example_id: int) -> dict:
    return {"example_id": example_id, "question_text": f"question {example_id}",
            "document_text": f"Title <P> fact number {example_id} is here </P>",
            "annotations": [{"yes_no_answer": "NONE", "long_answer": {"start_token": 1, "end_token": 8},
                             "short_answers": [{"start_token": 4, "end_token": 5}]}]}


def _members_raw(tmp_path: Path, members: int = 3, per_member: int = 100) -> Path:
    """train.jsonl.gz as `members` gzip members (as concatenated downloads are), dev apart."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.jsonl.gz").write_bytes(b"".join(
        _member([_record(10_000 + m * per_member + i) for i in range(per_member)]) for m in range(members)))
    (raw / "dev.jsonl.gz").write_bytes(_member([_record(90_000 + i) for i in range(20)]))
    write_manifest(raw, "test")
    return raw


def test_a_file_cut_at_a_gzip_member_boundary_is_short_of_the_manifest(tmp_path):
    """The first two members alone are a valid gzip stream of 200 records; only the manifest
    says 100 are missing. Checked before a line is read: nothing is written."""
    raw = _members_raw(tmp_path)
    whole = (raw / "train.jsonl.gz").read_bytes()
    cut = len(_member([_record(10_000 + i) for i in range(100)])) + len(_member([_record(10_100 + i) for i in range(100)]))
    (raw / "train.jsonl.gz").write_bytes(whole[:cut])
    assert len(gzip.decompress(whole[:cut]).splitlines()) == 200     # what a reader alone would take
    with pytest.raises(ManifestMismatch, match=rf"train\.jsonl\.gz: {cut:,} bytes, but manifest\.json records "
                                               rf"{len(whole):,}: the file was cut short after download"):
        prepare.run(_cfg(), raw, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


def test_a_file_changed_after_download_fails_its_sha256_and_is_named_so(tmp_path):
    raw = _members_raw(tmp_path)
    data = bytearray((raw / "train.jsonl.gz").read_bytes())
    data[4] ^= 0x01                   # the gzip header's MTIME: same size, same records, other bytes
    (raw / "train.jsonl.gz").write_bytes(bytes(data))
    with pytest.raises(ManifestMismatch, match=r"train\.jsonl\.gz: sha256 [0-9a-f]{16}… of what was read, but "
                                               r"manifest\.json records [0-9a-f]{16}…: the file changed"):
        prepare.run(_cfg(), raw, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()
    # Damage that breaks the stream is told as a changed file too, the reader's error as its cause.
    data[4] ^= 0x01
    data[len(data) // 2] ^= 0xFF
    (raw / "train.jsonl.gz").write_bytes(bytes(data))
    with pytest.raises(ManifestMismatch, match="the file changed after download") as raised:
        prepare.run(_cfg(max_bad_records=1000), raw, tmp_path / "prepared")
    assert isinstance(raised.value.__cause__, BadRecordError)


def test_a_raw_folder_without_its_manifest_is_refused(tmp_path):
    raw = _members_raw(tmp_path)
    (raw / MANIFEST).unlink()
    with pytest.raises(ManifestMismatch, match=r"manifest\.json: missing: `cfqa download` writes it after"):
        prepare.run(_cfg(), raw, tmp_path / "prepared")


def test_the_manifest_is_checked_and_its_hash_logged(tmp_path, caplog):
    raw = _members_raw(tmp_path)
    with caplog.at_level("INFO", logger="cfqa.stages.prepare"):
        prepare.run(_cfg(), raw, tmp_path / "prepared")
    entry = read_json(raw / MANIFEST)["files"]["train.jsonl.gz"]
    assert f"sha256 {entry['sha256'][:12]}… in manifest.json" in caplog.text
    stats = read_json(tmp_path / "prepared" / "stats.json")
    assert stats["splits"]["train"]["records"] + stats["splits"]["validation"]["records"] == 300


def test_a_duplicate_example_id_is_a_bad_record_and_no_question_is_in_two_splits(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    train = [_record(10_000 + i) for i in range(50)] + [_record(10_007)]            # line 51 repeats line 8
    (raw / "train.jsonl.gz").write_bytes(_member(train))
    (raw / "dev.jsonl.gz").write_bytes(_member([_record(90_000), _record(10_003), _record(90_001)]))  # a train id
    write_manifest(raw, "test")
    with pytest.raises(BadRecordError, match=r"train\.jsonl\.gz:51: example_id: 10007 is also the id of "
                                             r"train\.jsonl\.gz:8, the one kept"):
        prepare.run(_cfg(), raw, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()

    prepare.run(_cfg(max_bad_records=2), raw, tmp_path / "prepared")
    bad = read_json(tmp_path / "prepared" / "stats.json")["bad_records"]
    assert bad["by_reason"] == {"duplicate_id": 2} and bad["by_file"] == {"dev.jsonl.gz": 1, "train.jsonl.gz": 1}
    assert [(e["file"].rsplit("/", 1)[-1], e["line"]) for e in bad["first"]] == [("train.jsonl.gz", 51),
                                                                                  ("dev.jsonl.gz", 2)]
    splits = {split: [row["id"] for row in read_jsonl(tmp_path / "prepared" / f"{split}.jsonl")]
              for split in prepare.SPLITS}
    every_id = [i for ids in splits.values() for i in ids]
    assert len(every_id) == len(set(every_id)) == 52                               # 50 + 2 from dev
    assert "10003" not in splits["test"] and splits["test"] == ["90000", "90001"]
