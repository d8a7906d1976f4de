"""Stage `entities`: the spaCy entity label and Longpre answer-type group of each answer.

Reads data/prepared/{split}.jsonl (and raw/entity_patterns.jsonl for the offline pipeline);
writes data/entities/{split}.jsonl rows {"id", "answer", "label", "group"} in the same order.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from cfqa.io.atomic_io import atomic_dir, read_jsonl, write_jsonl
from cfqa.config import Config
from cfqa.counterfactual.examples import RecordError
from cfqa.io.logs import get_logger
from cfqa.counterfactual.ner import OFFLINE, PATTERNS_FILE, build_pipeline, label_answers
from cfqa.io.progress import progress

log = get_logger(__name__)
SPLITS = ("train", "validation", "test")
BATCH_SIZE = 256


def read_answers(path: Path) -> list[tuple[object, str]]:
    """(id, answer) of each prepared row; a row without them is an error naming file and record."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared split not found (run the prepare stage first)")
    pairs = []
    for number, row in enumerate(read_jsonl(path), start=1):
        if not isinstance(row.get("id"), (str, int)) or not isinstance(row.get("answer"), str):
            raise RecordError(f"{path}: record {number}: expected string or integer `id` and string "
                              f"`answer`, got {{id: {row.get('id')!r}, answer: {row.get('answer')!r}}}")
        pairs.append((row["id"], row["answer"]))
    return pairs


def run(cfg: Config, prepared: Path, raw: Path, out: Path) -> None:
    ner = cfg.entities.ner
    nlp = build_pipeline(ner, raw)
    if ner == OFFLINE:
        patterns = raw / PATTERNS_FILE
        log.info("NER: blank English + entity rulers %s (%s)", nlp.pipe_names,
                 f"source patterns from {patterns}" if patterns.is_file() else f"no {patterns}: generic patterns only")
    else:
        log.info("NER: installed spaCy pipeline %s %s", ner, nlp.pipe_names)
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            source = prepared / f"{split}.jsonl"
            pairs = read_answers(source)
            answers = (answer for _, answer in pairs)
            labels = list(progress(label_answers(nlp, answers, BATCH_SIZE), desc=f"entities {split}",
                                   total=len(pairs), unit="answer"))
            rows = [{"id": example_id, "answer": answer, "label": label, "group": cfg.entities.group_of(label)}
                    for (example_id, answer), label in zip(pairs, labels)]
            write_jsonl(tmp / f"{split}.jsonl", rows)
            by_label = Counter(row["label"] or "none" for row in rows)
            by_group = Counter(row["group"] or "untyped" for row in rows)
            log.info("%s: read %d answers from %s; wrote %s; labels %s; groups %s", split, len(rows), source,
                     out / f"{split}.jsonl", dict(by_label.most_common()), dict(by_group.most_common()))
