"""Answer typing with spaCy: build the pipeline named by params.yaml `entities.ner`, and label
an answer string with the spaCy entity label that covers all of it.

`offline` is `spacy.blank("en")` with two entity rulers: the first holds the patterns the
data source ships (raw/entity_patterns.jsonl, written by the embedded world), the second
generic patterns for numbers and simple dates. The source's patterns run first so that they
win where both match. Any other value is the name of an installed spaCy pipeline (the
official ones are pinned by URL and sha256 in requirements-ner-model.lock and installed by
`make install-ner-model` and the images; they are on no package index).

Following Longpre et al., the answer span itself is typed: NER runs on the answer text, and
the answer gets a label only when one entity covers the whole answer (a leading article and
surrounding punctuation aside, as SQuAD normalization ignores them).
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import orjson

from cfqa.errors import BadInput

# spaCy (and the torch it imports) only where a pipeline is built: `fetch` checks that the named
# pipeline is installed without paying for them.
if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

OFFLINE = "offline"
PATTERNS_FILE = "entity_patterns.jsonl"
SOURCE_RULER = "source_entity_ruler"
GENERIC_RULER = "generic_entity_ruler"

_ARTICLES = frozenset({"the", "a", "an"})

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_MONTH_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept",
                        "Oct", "Nov", "Dec")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# A four-digit number from 1000 to 2099 is read as a year, as spaCy's trained pipelines mostly do.
_YEAR_BODY = r"(1\d{3}|20\d{2})"
_ORDINAL_BODY = (r"(\d+(st|nd|rd|th)|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|"
                 r"tenth|eleventh|twelfth|\w+teenth|\w+ieth|hundredth|thousandth|millionth|billionth)")
_YEAR = rf"^{_YEAR_BODY}$"
_ORDINAL = rf"^{_ORDINAL_BODY}$"
_DECADE = r"^(1\d{2}|20\d)0'?s$"
_DAY = r"^([1-9]|0[1-9]|[12]\d|3[01])(st|nd|rd|th)?$"
# A number-like token that is neither a year nor an ordinal, so the labels never tie on a span.
_CARDINAL_TOKEN = {"LIKE_NUM": True, "LOWER": {"REGEX": rf"^(?!{_YEAR_BODY}$)(?!{_ORDINAL_BODY}$)"}}


class NERUnavailable(BadInput, RuntimeError):
    """The spaCy pipeline named in params.yaml cannot be loaded here."""


class PatternFileError(BadInput, ValueError):
    """A line of an entity-pattern file is not a {"label", "pattern"} object."""


def generic_patterns() -> list[dict]:
    """Entity-ruler patterns for numbers (CARDINAL, ORDINAL, PERCENT) and simple dates (DATE)."""
    month = {"ORTH": {"IN": [*_MONTHS, *_MONTH_ABBREVIATIONS, *(m + "." for m in _MONTH_ABBREVIATIONS)]}}
    day = {"LOWER": {"REGEX": _DAY}}
    year = {"TEXT": {"REGEX": _YEAR}}
    comma = {"ORTH": ",", "OP": "?"}
    of = {"LOWER": "of", "OP": "?"}
    dates = [
        [year],                                   # 1990
        [{"LOWER": {"REGEX": _DECADE}}],          # 1990s
        [day, of, month, comma, year],            # 12 May 1990, 12th of May, 1990
        [month, day, comma, year],                # May 12, 1990
        [month, comma, year],                     # May 1990
        [day, of, month],                         # 12 May
        [month, day],                             # May 12
        [month],                                  # May
        [{"ORTH": {"IN": list(_WEEKDAYS)}}],      # Monday
    ]
    numbers = [
        ("ORDINAL", [{"LOWER": {"REGEX": _ORDINAL}}]),
        ("PERCENT", [{**_CARDINAL_TOKEN, "OP": "+"}, {"LOWER": {"IN": ["%", "percent"]}}]),
        ("PERCENT", [{**_CARDINAL_TOKEN, "OP": "+"}, {"LOWER": "per"}, {"LOWER": "cent"}]),
        ("CARDINAL", [{**_CARDINAL_TOKEN, "OP": "+"}]),
    ]
    return ([{"label": "DATE", "pattern": pattern} for pattern in dates]
            + [{"label": label, "pattern": pattern} for label, pattern in numbers])


def read_patterns(path: Path) -> list[dict]:
    """Entity-ruler patterns from a JSONL file; a bad line is an error naming file and line."""
    patterns = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise PatternFileError(f"{where}: expected a JSON object per line: {error}") from error
            if not isinstance(row, dict) or set(row) - {"label", "pattern", "id"}:
                raise PatternFileError(f"{where}: expected {{\"label\": str, \"pattern\": str | list}}, got {row!r}")
            label, pattern = row.get("label"), row.get("pattern")
            if not isinstance(label, str) or not label:
                raise PatternFileError(f"{where}: `label` must be a non-empty string, got {label!r}")
            if not (isinstance(pattern, str) and pattern.strip()) and not (isinstance(pattern, list) and pattern):
                raise PatternFileError(f"{where}: `pattern` must be a non-empty string or a token "
                                       f"pattern list, got {pattern!r}")
            patterns.append(row)
    return patterns


def build_offline_pipeline(patterns: Iterable[dict] = ()) -> Language:
    """Blank English + the source's patterns (case-insensitive phrases) + generic patterns."""
    import spacy

    nlp = spacy.blank("en")
    patterns = list(patterns)
    if patterns:
        source = nlp.add_pipe("entity_ruler", name=SOURCE_RULER, config={"phrase_matcher_attr": "LOWER"})
        source.add_patterns(patterns)
    generic = nlp.add_pipe("entity_ruler", name=GENERIC_RULER)
    generic.add_patterns(generic_patterns())
    return nlp


# How to get each official pipeline a profile names, pinned by URL and sha256.
INSTALL_HINTS = {"en_core_web_sm": "`make install-ner-model` (requirements-ner-model.lock: spaCy's release wheel, "
                                   "sha256-checked; needs github.com), or use an image built with it (containers/)"}


def require_installed(name: str) -> None:
    """NERUnavailable at once, before any work, when `entities.ner` names a pipeline that is
    not installed; `offline` needs none. Checked by `fetch` (a real run's first stage) and by
    `entities` itself, so a missing model never surfaces mid-run."""
    if name == OFFLINE or _is_installed(name):
        return
    hint = INSTALL_HINTS.get(name, f"install spaCy's official {name!r} wheel, pinned by its sha256")
    raise NERUnavailable(f"spaCy pipeline {name!r} (params.yaml entities.ner) is not installed: {hint}; or set "
                         f"entities.ner: {OFFLINE}")


def _is_installed(name: str) -> bool:
    """What spacy.util.is_package answers (an installed distribution of that name), without
    importing spaCy."""
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def load_installed_pipeline(name: str) -> Language:
    import spacy

    require_installed(name)
    try:
        return spacy.load(name)
    except OSError as error:
        raise NERUnavailable(f"spaCy pipeline {name!r} (params.yaml entities.ner) could not be loaded: "
                             f"{error}") from error


def build_pipeline(ner: str, raw_dir: Path | None = None) -> Language:
    """The pipeline params.yaml `entities.ner` names; `offline` reads raw_dir's patterns if any."""
    if ner != OFFLINE:
        return load_installed_pipeline(ner)
    patterns_path = Path(raw_dir) / PATTERNS_FILE if raw_dir is not None else None
    patterns = read_patterns(patterns_path) if patterns_path and patterns_path.is_file() else []
    return build_offline_pipeline(patterns)


def answer_label(doc: Doc) -> str | None:
    """The label of an entity covering the whole answer, or None when no entity does."""
    tokens = [token for token in doc if not (token.is_punct or token.is_space)]
    while len(tokens) > 1 and tokens[0].lower_ in _ARTICLES:
        tokens = tokens[1:]
    if not tokens:
        return None
    first, last = tokens[0].i, tokens[-1].i
    for entity in doc.ents:
        if entity.start <= first and entity.end > last:
            return entity.label_
    return None


def label_answers(nlp: Language, answers: Iterable[str], batch_size: int = 256) -> Iterator[str | None]:
    """The spaCy label of each answer, in order (batched with nlp.pipe)."""
    for doc in nlp.pipe(answers, batch_size=batch_size):
        yield answer_label(doc)
