"""Counterfactual substitution on the embedded default's real data: the data stages run once
on params.yaml into a temporary directory, and no counterfactual row renames a longer name
("South Africa", "French Polynesia") or rewrites a longer number ("3,790,000")."""
from __future__ import annotations

import re
from collections import Counter

import orjson
import pytest

from cfqa import config as config_module
from cfqa.counterfactual import answers_pattern, whole_mention_in_context
from cfqa.formats import VARIANTS
from cfqa.stages import counterfactuals, download, entities, prepare
from cfqa.world.facts import load_cities, load_countries

SETS = ("train", "validation", "test", "seen")
DIGIT_GROUP = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)+(?![\w])")


def read_rows(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    cfg = config_module.load([config_module.PROJECT_ROOT / "params.yaml"])
    download.run(cfg, out=root / "raw", cache=root / "cache")   # the embedded world reads no cache
    prepare.run(cfg, raw=root / "raw", out=root / "prepared")
    entities.run(cfg, prepared=root / "prepared", raw=root / "raw", out=root / "entities")
    counterfactuals.run(cfg, prepared=root / "prepared", entities=root / "entities", out=root / "variants",
                        stats=root / "stats.json")
    variants = {name: {v: read_rows(root / "variants" / name / f"{v}.jsonl") for v in VARIANTS} for name in SETS}
    return {"root": root, "cfg": cfg, "variants": variants, "stats": orjson.loads((root / "stats.json").read_bytes())}


@pytest.fixture(scope="module")
def world_names(data):
    """Every name the world's contexts can mention: the NER's entity patterns, countries,
    capitals and the cities asked about."""
    patterns = [orjson.loads(line)["pattern"] for line in (data["root"] / "raw" / "entity_patterns.jsonl")
                .read_bytes().splitlines()]
    countries = load_countries()
    world = data["cfg"].data.embedded
    cities = load_cities(world.min_city_population, world.max_cities_per_country, countries)
    names = {*patterns, *(c.name for c in countries.values()), *(c.capital for c in countries.values()),
             *(c.name for c in cities)}
    return sorted(name for name in names if name)


def count_word_bounded(text: str, name: str) -> int:
    pattern = answers_pattern([name])
    return len(pattern.findall(text)) if pattern is not None else 0


def counterfactual_pairs(data):
    """(set, factual row, counterfactual row) for every counterfactual row."""
    for name in SETS:
        factual = {row["id"]: row for row in data["variants"][name]["factual"]}
        for row in data["variants"][name]["counterfactual"]:
            yield name, factual[row["id"]], row


def test_no_counterfactual_renames_a_longer_name(data, world_names):
    checked = Counter()
    for name, factual, counterfactual in counterfactual_pairs(data):
        gold = answers_pattern(factual["answers"])
        longer = [n for n in world_names
                  if gold.search(n) and not gold.fullmatch(n) and count_word_bounded(factual["context"], n)]
        for longer_name in longer:
            assert (count_word_bounded(counterfactual["context"], longer_name)
                    == count_word_bounded(factual["context"], longer_name)), (name, longer_name, counterfactual)
            checked[longer_name] += 1
    # The embedded default does hold such names: the check is not empty.
    assert checked["South Africa"] > 0 and sum(checked.values()) >= 10, checked


def test_no_counterfactual_rewrites_a_longer_number(data):
    rows = 0
    for name, factual, counterfactual in counterfactual_pairs(data):
        before = Counter(DIGIT_GROUP.findall(factual["context"]))
        after = Counter(DIGIT_GROUP.findall(counterfactual["context"]))
        assert after == before, (name, counterfactual)
        rows += bool(before)
    assert rows > 0  # city contexts state populations such as "3,790,000"


def test_every_whole_mention_is_replaced(data):
    for name, factual, counterfactual in counterfactual_pairs(data):
        assert not whole_mention_in_context(counterfactual["context"], factual["answers"]), (name, counterfactual)
        assert count_word_bounded(counterfactual["context"], counterfactual["substitute"]) >= 1


def test_stats_count_the_partial_mentions_left_alone(data):
    stats = data["stats"]["partial_mentions"]
    for name in SETS:
        kept = [counterfactual for in_set, factual, counterfactual in counterfactual_pairs(data)
                if in_set == name and answers_pattern(factual["answers"]).search(counterfactual["context"])]
        mentions = sum(len(answers_pattern(row["answers"]).findall(row["context"])) for row in kept)
        assert stats[name] == {"mentions": mentions, "counterfactual_rows": len(kept),
                               "questions": len({row["id"] for row in kept})}, name
    assert sum(stats[name]["counterfactual_rows"] for name in SETS) > 0
