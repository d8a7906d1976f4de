"""One QA example as the counterfactual stage sees it: a prepared row joined with its type."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping
from cfqa.errors import BadInput


class RecordError(BadInput, ValueError):
    """A prepared or entities record lacks a field or has the wrong type; names where."""


@dataclass(frozen=True)
class Example:
    id: Any                      # as the prepared file has it (NQ example ids are integers)
    question: str
    context: str
    answer: str                  # the first gold short answer: the one typed and substituted
    answers: tuple[str, ...]     # every distinct gold short answer
    label: str | None            # spaCy entity label of `answer`
    group: str | None            # its Longpre answer-type group

    @property
    def typed(self) -> bool:
        return self.label is not None and self.group is not None


def _field(row: Mapping, key: str, kind: type | tuple, where: str, nullable: bool = False):
    if key not in row:
        raise RecordError(f"{where}: missing field {key!r}")
    value = row[key]
    if value is None and nullable:
        return None
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError(f"{where}: field {key!r} must be {expected}{' or null' if nullable else ''}, "
                          f"got {value!r}")
    return value


def example_from_records(prepared: Mapping, entity: Mapping, where: str) -> Example:
    """An Example from a prepared row and its entities row; `where` names the file and record."""
    example_id = _field(prepared, "id", (str, int), where)
    answers = _field(prepared, "answers", list, where)
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise RecordError(f"{where}: field 'answers' must be a non-empty list of non-empty strings, "
                          f"got {answers!r}")
    answer = _field(prepared, "answer", str, where)
    if answer not in answers:
        answers = [answer, *answers]
    return Example(
        id=example_id,
        question=_field(prepared, "question", str, where),
        context=_field(prepared, "context", str, where),
        answer=answer,
        answers=tuple(dict.fromkeys(answers)),
        label=_field(entity, "label", str, where, nullable=True),
        group=_field(entity, "group", str, where, nullable=True),
    )
