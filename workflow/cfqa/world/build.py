"""Writes the embedded world as raw data: NQ-simplified train/dev records, the pretraining
corpus and entity-ruler patterns for offline NER."""
from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from pathlib import Path

import orjson

from cfqa.io.atomic_io import atomic_open
from cfqa.config import EmbeddedWorldConfig
from cfqa.io.logs import get_logger
from cfqa.nq.writer import atomic_jsonl_gz
from cfqa.world import documents
from cfqa.world.facts import Fact, facts_with_shared_answers, load_cities, load_countries, world_facts
from cfqa.world.nq_records import nq_record, stable_id

log = get_logger(__name__)


def held_out(subject_key: str, seed: int, fraction: float) -> bool:
    """Deterministic subject-level split: all questions about a subject land on one side."""
    digest = hashlib.sha256(f"{seed}:{subject_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def write_world(cfg: EmbeddedWorldConfig, raw_dir: Path) -> dict:
    countries = load_countries()
    cities = load_cities(cfg.min_city_population, cfg.max_cities_per_country, countries)
    all_facts = world_facts(countries, cities)
    facts, rare_answer_drops = facts_with_shared_answers(all_facts, cfg.min_subjects_per_answer)
    city_by_key = {f"city:{c.name}": c for c in cities}

    pages: dict[str, documents.Page] = {}
    statements: dict[str, list[tuple[str, ...]]] = {}
    for country in countries.values():
        statements[f"country:{country.code}"] = documents.country_statements(country)
    for city in cities:
        statements[f"city:{city.name}"] = documents.city_statements(city, countries[city.country_code])
    for key, options in statements.items():
        title = city_by_key[key].name if key in city_by_key else countries[key.split(":")[1]].name
        pages[key] = documents.page(title, options, random.Random(f"{cfg.seed}:page:{key}"))

    train, dev, dropped = [], [], Counter()
    for fact in facts:
        record = fact_record(fact, pages[fact.subject_key], cfg.seed)
        (dev if held_out(fact.subject_key, cfg.seed, cfg.test_fraction) else train).append((fact, record))
    # A held-out question whose answer no training question has would need copying an
    # unseen string, which a tiny model does not learn; keep the test about shared answers.
    train_answers = {fact.answer for fact, _ in train}
    kept_dev = []
    for fact, record in dev:
        if fact.answer in train_answers:
            kept_dev.append((fact, record))
        else:
            dropped[fact.relation] += 1

    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train.jsonl.gz", train), ("dev.jsonl.gz", kept_dev)):
        with atomic_jsonl_gz(raw_dir / name) as writer:  # no file name or mtime in the header
            for _, record in pairs:
                writer.write(record)
    corpus_lines = [sentence for options in statements.values() for sentence in options_sentences(options)]
    random.Random(f"{cfg.seed}:corpus").shuffle(corpus_lines)
    with atomic_open(raw_dir / "corpus.txt") as handle:
        handle.write("\n".join(corpus_lines) + "\n")
    with atomic_open(raw_dir / "entity_patterns.jsonl", "wb") as handle:
        # Every answer the pages state, asked or not: substitutes and NER see the whole world.
        for label, pattern in sorted({(f.answer_label, f.answer) for f in all_facts if f.answer_label != "CARDINAL"}):
            handle.write(orjson.dumps({"label": label, "pattern": pattern}) + b"\n")

    summary = {
        "train_records": len(train),
        "dev_records": len(kept_dev),
        "dev_dropped_answer_unseen_in_train": dict(dropped),
        "facts_dropped_rare_answer": dict(rare_answer_drops),
        "relations": dict(Counter(f.relation for f in facts)),
        "corpus_sentences": len(corpus_lines),
        "countries": len(countries),
        "cities": len(cities),
    }
    log.info("embedded world: %s", summary)
    return summary


def options_sentences(options: list[tuple[str, ...]]) -> list[str]:
    """Each paragraph's paraphrases, split into sentences: every fact is stated several ways."""
    sentences = []
    for paraphrases in options:
        for text in paraphrases:
            # Sentences end with a separate " ." token.
            sentences.extend(s for s in re.split(r"(?<= \.) ", text) if s)
    return sentences


def fact_record(fact: Fact, page: documents.Page, seed: int) -> dict:
    example_id = stable_id(fact.relation, fact.subject_key)
    return nq_record(
        example_id=example_id,
        question=documents.question(fact.relation, fact.subject, random.Random(f"{seed}:q:{example_id}")),
        page=page,
        paragraph_index=documents.ANSWER_PARAGRAPH[fact.relation],
        answer=fact.answer,
        subject=fact.subject,
        url=f"cfqa-embedded://{fact.subject_key}",
    )
