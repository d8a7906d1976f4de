"""Original-format NQ and the Hugging Face copy of NQ → the simplified schema."""
from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import datasets
import pytest

from cfqa import config
from cfqa.io.atomic_io import read_jsonl
from cfqa.config import HuggingFaceSourceConfig
from cfqa.nq.errors import BadRecordError
from cfqa.nq.huggingface import HuggingFaceExportError, export_huggingface
from cfqa.nq.manifest import write_manifest
from cfqa.nq.original_format import convert_files, to_simplified
from cfqa.stages import prepare

FIXTURES = Path(__file__).parent / "fixtures" / "nq"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def test_original_record_becomes_simplified_with_consistent_spans():
    original = _lines(FIXTURES / "original_dev_00.jsonl.gz")[1]  # 9002: blanks inside tokens
    simplified = to_simplified(original)
    tokens = simplified["document_text"].split(" ")
    assert len(tokens) == len(original["document_tokens"])
    assert tokens[:4] == ["New_York", "<Table>", "<Tr>", '<Th_colspan="2">']
    assert tokens[9] == "8\u00a0million"  # a no-break space is not a blank: kept as is
    annotation = simplified["annotations"][0]
    assert annotation == {"yes_no_answer": "NONE",
                          "long_answer": {"start_token": 1, "end_token": 17, "candidate_index": 0},
                          "short_answers": [{"start_token": 9, "end_token": 10}], "annotation_id": 11}
    assert simplified["long_answer_candidates"] == [{"start_token": 1, "end_token": 17, "top_level": True}]
    assert simplified["example_id"] == 9002 and "document_tokens" not in simplified


def test_convert_files_writes_every_record_of_every_file(tmp_path):
    out = tmp_path / "dev.jsonl.gz"
    count = convert_files([FIXTURES / "original_dev_00.jsonl.gz", FIXTURES / "original_dev_01.jsonl.gz"], out)
    records = _lines(out)
    assert count == 4 and [r["example_id"] for r in records] == [9001, 9002, 9003, 9004]
    first = records[0]
    assert [a["annotation_id"] for a in first["annotations"]] == [1, 2, 3, 4, 5]
    short = first["annotations"][3]["short_answers"][0]
    assert first["document_text"].split(" ")[short["start_token"]:short["end_token"]] == ["31", "March", "1889"]


def test_convert_files_names_file_and_line_of_a_bad_record(tmp_path):
    bad = tmp_path / "nq-dev-bad.jsonl.gz"
    good = gzip.decompress((FIXTURES / "original_dev_01.jsonl.gz").read_bytes()).splitlines()[0]
    broken = json.loads(good)
    del broken["document_tokens"]
    bad.write_bytes(gzip.compress(good + b"\n" + json.dumps(broken).encode() + b"\n"))
    with pytest.raises(BadRecordError, match=r"nq-dev-bad\.jsonl\.gz:2: document_tokens: required field is missing"):
        convert_files([bad], tmp_path / "dev.jsonl.gz")
    assert not (tmp_path / "dev.jsonl.gz").exists()


@pytest.mark.parametrize("change,message", [
    (lambda r: r.update(annotations=7), r"annotations: expected a list, got int"),
    (lambda r: r["annotations"][0].update(short_answers="x"), r"annotations\[0\]\.short_answers: expected a list"),
    (lambda r: r["document_tokens"][0].update(token=5), r"document_tokens: expected a list of objects with a string"),
    (lambda r: r.update(long_answer_candidates={}), r"long_answer_candidates: expected a list, got dict"),
    (lambda r: r.update(document_tokens=None), r"document_tokens: expected a list, got NoneType"),
])
def test_convert_files_names_a_mistyped_field_instead_of_failing_inside(tmp_path, change, message):
    record = json.loads(gzip.decompress((FIXTURES / "original_dev_01.jsonl.gz").read_bytes()).splitlines()[0])
    change(record)
    bad = tmp_path / "nq-dev-bad.jsonl.gz"
    bad.write_bytes(gzip.compress(json.dumps(record).encode() + b"\n"))
    with pytest.raises(BadRecordError, match=r"nq-dev-bad\.jsonl\.gz:1: " + message):
        convert_files([bad], tmp_path / "dev.jsonl.gz")


def test_convert_files_rejects_a_source_with_no_records(tmp_path):
    empty = tmp_path / "nq-dev-empty.jsonl.gz"
    empty.write_bytes(gzip.compress(b""))
    with pytest.raises(BadRecordError, match=r"nq-dev-empty\.jsonl\.gz: expected one JSON record per line, found none"):
        convert_files([empty], tmp_path / "dev.jsonl.gz")
    assert not (tmp_path / "dev.jsonl.gz").exists()


# The schema of google-research-datasets/natural_questions (datasets 5.x).
HF_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "document": {
        "html": datasets.Value("string"), "title": datasets.Value("string"), "url": datasets.Value("string"),
        "tokens": datasets.Sequence({"end_byte": datasets.Value("int64"), "is_html": datasets.Value("bool"),
                                     "start_byte": datasets.Value("int64"), "token": datasets.Value("string")}),
    },
    "question": {"text": datasets.Value("string"), "tokens": datasets.Sequence(datasets.Value("string"))},
    "long_answer_candidates": datasets.Sequence({
        "end_byte": datasets.Value("int64"), "end_token": datasets.Value("int64"),
        "start_byte": datasets.Value("int64"), "start_token": datasets.Value("int64"),
        "top_level": datasets.Value("bool")}),
    "annotations": datasets.Sequence({
        "id": datasets.Value("string"),
        "long_answer": {"candidate_index": datasets.Value("int64"), "end_byte": datasets.Value("int64"),
                        "end_token": datasets.Value("int64"), "start_byte": datasets.Value("int64"),
                        "start_token": datasets.Value("int64")},
        "short_answers": datasets.Sequence({
            "end_byte": datasets.Value("int64"), "end_token": datasets.Value("int64"),
            "start_byte": datasets.Value("int64"), "start_token": datasets.Value("int64"),
            "text": datasets.Value("string")}),
        "yes_no_answer": datasets.ClassLabel(names=["NO", "YES"]),
    }),
})


def _hf_row(example_id: str, question: str, tokens: list[str], annotations: list[dict]) -> dict:
    is_html = [t.startswith("<") for t in tokens]
    long_spans = [a["long"] for a in annotations if a["long"][0] >= 0]
    return {
        "id": example_id,
        "document": {"html": " ".join(tokens), "title": "t", "url": f"https://example.org/{example_id}",
                     "tokens": {"token": tokens, "is_html": is_html, "start_byte": [0] * len(tokens),
                                "end_byte": [0] * len(tokens)}},
        "question": {"text": question, "tokens": question.split()},
        "long_answer_candidates": {"start_token": [s for s, _ in long_spans], "end_token": [e for _, e in long_spans],
                                   "start_byte": [0] * len(long_spans), "end_byte": [0] * len(long_spans),
                                   "top_level": [True] * len(long_spans)},
        "annotations": {
            "id": [str(i) for i in range(len(annotations))],
            "long_answer": [{"candidate_index": 0 if a["long"][0] >= 0 else -1, "start_token": a["long"][0],
                             "end_token": a["long"][1], "start_byte": 0, "end_byte": 0} for a in annotations],
            "short_answers": [{"start_token": [s for s, _ in a["short"]], "end_token": [e for _, e in a["short"]],
                               "start_byte": [0] * len(a["short"]), "end_byte": [0] * len(a["short"]),
                               "text": ["x"] * len(a["short"])} for a in annotations],
            "yes_no_answer": [a.get("yes_no", -1) for a in annotations],
        },
    }


def _tiny_natural_questions() -> dict[str, datasets.Dataset]:
    train_rows = [
        _hf_row("5001", "who painted the mona lisa",
                ["Mona", "Lisa", "<P>", "It", "was", "painted", "by", "Leonardo", "da\u00a0Vinci", ".", "</P>"],
                [{"long": (2, 11), "short": [(7, 9)]}]),
        _hf_row("5002", "is water wet", ["Water", "<P>", "Water", "is", "wet", ".", "</P>"],
                [{"long": (1, 7), "short": [], "yes_no": 1}]),
    ]
    validation_rows = [
        _hf_row("6001", "where is the louvre",
                ["Louvre", "<Table>", "<Tr>", '<Td colspan="2">', "Location", "</Td>", "<Td>", "Paris", "</Td>",
                 "</Tr>", "</Table>"],
                [{"long": (-1, -1), "short": []}, {"long": (1, 11), "short": [(6, 9)]},
                 {"long": (1, 11), "short": [(7, 8)]}]),
    ]
    return {"train": datasets.Dataset.from_list(train_rows, features=HF_FEATURES),
            "validation": datasets.Dataset.from_list(validation_rows, features=HF_FEATURES)}


def test_huggingface_rows_are_exported_in_the_simplified_schema(tmp_path):
    tiny = _tiny_natural_questions()
    requested = []

    def load_split(dataset_id, split):
        requested.append((dataset_id, split))
        return tiny[split]

    export_huggingface(HuggingFaceSourceConfig(dataset_id="google-research-datasets/natural_questions"),
                       tmp_path, load_split=load_split)
    assert requested == [("google-research-datasets/natural_questions", "train"),
                         ("google-research-datasets/natural_questions", "validation")]
    train = _lines(tmp_path / "train.jsonl.gz")
    assert [r["example_id"] for r in train] == ["5001", "5002"]
    first = train[0]
    assert first["question_text"] == "who painted the mona lisa"
    assert first["document_text"] == "Mona Lisa <P> It was painted by Leonardo da\u00a0Vinci . </P>"
    assert first["annotations"][0]["long_answer"] == {"start_token": 2, "end_token": 11, "candidate_index": 0}
    assert first["annotations"][0]["short_answers"] == [{"start_token": 7, "end_token": 9}]
    assert train[1]["annotations"][0]["yes_no_answer"] == "YES"
    dev = _lines(tmp_path / "dev.jsonl.gz")
    assert dev[0]["document_text"].split(" ")[3] == '<Td_colspan="2">'
    assert [a["yes_no_answer"] for a in dev[0]["annotations"]] == ["NONE"] * 3


def test_exported_huggingface_data_goes_through_prepare(tmp_path):
    tiny = _tiny_natural_questions()
    raw = tmp_path / "raw"
    export_huggingface(HuggingFaceSourceConfig(dataset_id="nq"), raw, load_split=lambda _, split: tiny[split])
    write_manifest(raw, "huggingface")
    cfg = config.load([config.PROJECT_ROOT / "params.yaml"])
    cfg = dataclasses.replace(cfg, prepare=config.PrepareConfig(seed=0, validation_fraction=0.0,
                                                                drop_table_and_list_contexts=False,
                                                                max_bad_records=0))
    prepare.run(cfg, raw, tmp_path / "prepared")
    train = list(read_jsonl(tmp_path / "prepared" / "train.jsonl"))
    assert [(r["id"], r["context"], r["answer"]) for r in train] == [
        ("5001", "It was painted by Leonardo da\u00a0Vinci .", "Leonardo da\u00a0Vinci")]
    test = list(read_jsonl(tmp_path / "prepared" / "test.jsonl"))
    assert [(r["id"], r["context"], r["answer"], r["answers"]) for r in test] == [
        ("6001", "Location Paris", "Paris", ["Paris"])]


def test_huggingface_load_failure_names_the_dataset(tmp_path):
    def offline(dataset_id, split):
        raise ConnectionError("no route to host")

    with pytest.raises(HuggingFaceExportError, match=r"'google-research-datasets/natural_questions'.*no route to host"):
        export_huggingface(HuggingFaceSourceConfig(dataset_id="google-research-datasets/natural_questions"),
                           tmp_path, load_split=offline)
    assert list(tmp_path.iterdir()) == []
