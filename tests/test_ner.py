"""Answer typing: the offline spaCy pipeline, the whole-answer rule and the entities stage."""
from __future__ import annotations

import dataclasses

import orjson
import pytest

from cfqa import config as config_module
from cfqa.counterfactual import RecordError
from cfqa.counterfactual.ner import (GENERIC_RULER, SOURCE_RULER, NERUnavailable, PatternFileError, answer_label,
                      build_pipeline, label_answers)
from cfqa.stages import entities as entities_stage

PATTERNS = [{"label": "GPE", "pattern": "France"}, {"label": "LOC", "pattern": "Europe"},
            {"label": "LANGUAGE", "pattern": "French"}, {"label": "GPE", "pattern": "New Zealand"},
            {"label": "EVENT", "pattern": "May 1968"}]


@pytest.fixture
def raw_dir(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "entity_patterns.jsonl").write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in PATTERNS))
    return raw


@pytest.fixture
def offline(raw_dir):
    return build_pipeline("offline", raw_dir)


def label(nlp, text):
    return answer_label(nlp(text))


def test_offline_pipeline_types_the_basic_answers(offline):
    assert offline.pipe_names == [SOURCE_RULER, GENERIC_RULER]
    assert list(label_answers(offline, ["France", "Europe", "12", "1990"])) == ["GPE", "LOC", "CARDINAL", "DATE"]


@pytest.mark.parametrize("text, expected", [
    ("12 May 1990", "DATE"), ("May 12, 1990", "DATE"), ("May 1990", "DATE"), ("the 1990s", "DATE"),
    ("1,000", "CARDINAL"), ("twelve million", "CARDINAL"), ("3.5", "CARDINAL"), ("12th", "ORDINAL"),
    ("10%", "PERCENT"), ("new zealand", "GPE"), ("French", "LANGUAGE"),
])
def test_generic_and_source_patterns(offline, text, expected):
    assert label(offline, text) == expected


def test_the_entity_must_cover_the_whole_answer(offline):
    assert label(offline, "12 of them") is None
    assert label(offline, "France and Spain") is None
    assert label(offline, "Paris") is None  # no pattern names it
    assert label(offline, "the France") == "GPE"  # a leading article and punctuation are ignored
    assert label(offline, '"France".') == "GPE"


def test_source_patterns_win_over_generic_ones(offline, tmp_path):
    assert label(offline, "May 1968") == "EVENT"
    assert label(build_pipeline("offline", tmp_path / "nowhere"), "May 1968") == "DATE"


def test_without_a_pattern_file_only_generic_patterns(tmp_path):
    nlp = build_pipeline("offline", tmp_path)
    assert nlp.pipe_names == [GENERIC_RULER]
    assert label(nlp, "France") is None and label(nlp, "1990") == "DATE"


def test_bad_pattern_line_names_file_and_line(tmp_path):
    (tmp_path / "entity_patterns.jsonl").write_text('{"label": "GPE", "pattern": "France"}\n{"label": "GPE"}\n')
    with pytest.raises(PatternFileError, match=r"entity_patterns\.jsonl:2: `pattern` must be"):
        build_pipeline("offline", tmp_path)


def test_missing_model_is_a_clear_error():
    with pytest.raises(NERUnavailable, match=r"'en_core_web_nonexistent' \(params.yaml entities.ner\) is not installed: "
                                             r"install spaCy's official .* pinned by its sha256; or set entities.ner: offline"):
        build_pipeline("en_core_web_nonexistent")


def write_prepared(directory, rows_by_split):
    directory.mkdir(parents=True)
    for split, rows in rows_by_split.items():
        (directory / f"{split}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def stage_config():
    cfg = config_module.load([config_module.PROJECT_ROOT / "params.yaml"])
    return dataclasses.replace(cfg, entities=dataclasses.replace(cfg.entities, ner="offline"))


def test_entities_stage_writes_labels_and_groups(tmp_path, raw_dir):
    answers = {"train": ["France", "Europe", "1990", "Paris"], "validation": ["12"], "test": ["12th", "French"]}
    prepared = tmp_path / "prepared"
    write_prepared(prepared, {split: [{"id": f"{split}{i}", "answer": a, "question": "q?", "context": a,
                                       "answers": [a]} for i, a in enumerate(values)]
                              for split, values in answers.items()})
    out = tmp_path / "entities"
    entities_stage.run(stage_config(), prepared=prepared, raw=raw_dir, out=out)
    rows = {split: [orjson.loads(line) for line in (out / f"{split}.jsonl").read_bytes().splitlines()]
            for split in answers}
    assert rows["train"] == [
        {"id": "train0", "answer": "France", "label": "GPE", "group": "LOCATION"},
        {"id": "train1", "answer": "Europe", "label": "LOC", "group": "LOCATION"},
        {"id": "train2", "answer": "1990", "label": "DATE", "group": "DATE"},
        {"id": "train3", "answer": "Paris", "label": None, "group": None},
    ]
    assert rows["validation"] == [{"id": "validation0", "answer": "12", "label": "CARDINAL", "group": "NUMERIC"}]
    assert [(r["label"], r["group"]) for r in rows["test"]] == [("ORDINAL", None), ("LANGUAGE", "LANGUAGE")]


def test_entities_stage_names_the_bad_record(tmp_path, raw_dir):
    prepared = tmp_path / "prepared"
    write_prepared(prepared, {"train": [{"id": "a", "answer": "France"}, {"id": "b", "answer": 12}],
                              "validation": [], "test": []})
    with pytest.raises(RecordError, match=r"train\.jsonl: record 2: expected .* `answer`"):
        entities_stage.run(stage_config(), prepared=prepared, raw=raw_dir, out=tmp_path / "entities")
    assert not (tmp_path / "entities").exists()
